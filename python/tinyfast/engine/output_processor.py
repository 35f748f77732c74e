"""Turns one sampled token into text and decides whether its sequence is done."""

from __future__ import annotations

from tinyfast.engine.request_state import RequestState, SeqState
from tinyfast.outputs import Logprob


def append_token(req: RequestState, seq: SeqState, token: int, logprob: float,
                 top: list[tuple[int, float]] | None, token_text) -> None:
    """Appends `token` to `seq`, updating text, logprobs and finish state."""
    params = req.params
    seq.output_ids.append(token)
    if seq.logprobs is not None:
        seq.cumulative_logprob += logprob
        # The sampler returns the top-k best first, so their ranks are their places; the sampled
        # token's rank is known only when it is among them.
        ranks = {tid: r for r, (tid, _) in enumerate(top or [], 1)}
        entry = {token: Logprob(token, logprob, token_text(token), ranks.get(token))}
        for tid, lp in top or []:
            entry.setdefault(tid, Logprob(tid, lp, token_text(tid), ranks[tid]))
        seq.logprobs.append(entry)

    is_eos = token in req.stop_ids and not params.ignore_eos
    is_stop_token = token in (params.stop_token_ids or ())
    if is_eos or is_stop_token:
        seq.text += seq.detokenizer.finish()
        _finish(seq, "stop", token)
        return

    previous = len(seq.text)
    seq.text += seq.detokenizer.add(token)
    if params.stop_strings and _check_stop_strings(seq, params, previous):
        return
    if len(seq.output_ids) >= req.max_new_tokens:
        seq.text += seq.detokenizer.finish()
        _finish(seq, "length", None)


def _check_stop_strings(seq: SeqState, params, previous_len: int) -> bool:
    longest = max(len(s) for s in params.stop_strings)
    # A stop string split across tokens starts at most longest-1 chars before the new text.
    start = max(0, previous_len - longest + 1)
    best = None
    for stop in params.stop_strings:
        i = seq.text.find(stop, start)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, stop)
    if best is None:
        return False
    i, stop = best
    seq.text = seq.text[: i + len(stop)] if params.include_stop_str_in_output else seq.text[:i]
    _finish(seq, "stop", stop)
    return True


def finish_sequence(seq: SeqState, reason: str, stop_reason=None) -> None:
    if seq.finished:
        return
    seq.text += seq.detokenizer.finish()
    _finish(seq, reason, stop_reason)


def _finish(seq: SeqState, reason: str, stop_reason) -> None:
    seq.finish_reason = reason
    seq.stop_reason = stop_reason
