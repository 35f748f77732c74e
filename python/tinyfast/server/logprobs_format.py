"""Engine logprob entries ({token id: Logprob}) in the shapes the OpenAI-compatible API returns."""

from __future__ import annotations

from typing import Any, Callable

from tinyfast.outputs import Logprob


def top_logprobs(entry: dict[int, Logprob], k: int) -> list[Logprob]:
    """The k most likely of an entry, best first."""
    return sorted(entry.values(), key=lambda lp: -lp.logprob)[:k]


def kept(entry: dict[int, Logprob], token_id: int, k: int) -> list[Logprob]:
    """The token's own entry and the k most likely (the engine may have computed more alternatives
    than a field asks for, when `prompt_logprobs` and `echo` + `logprobs` differ)."""
    return [e for e in entry.values() if e.token_id == token_id or e.rank is None or e.rank <= k]


def legacy_logprobs(token_ids: list[int], entries: list[dict[int, Logprob] | None], k: int, offset: int,
                    token_bytes: Callable[[int], bytes]) -> dict[str, Any]:
    """/v1/completions' `logprobs` (OpenAI's legacy shape): `tokens`, `token_logprobs`,
    `top_logprobs` (the token and the k most likely, keyed by text) and `text_offset` (running
    sum of token text lengths from `offset`). An entry of None (the first prompt token: nothing
    predicts it) gives null logprobs."""
    tokens, lps, tops, offsets = [], [], [], []
    for tid, entry in zip(token_ids, entries):
        lp = entry.get(tid) if entry is not None else None
        tokens.append(lp.token if lp else token_bytes(tid).decode("utf-8", errors="replace"))
        lps.append(lp.logprob if lp else None)
        tops.append(None if entry is None else {e.token: e.logprob for e in kept(entry, tid, k)})
        offsets.append(offset)
        offset += len(tokens[-1])
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def vllm_prompt_logprobs(prompt_ids: list[int], entries: list[dict[int, Logprob] | None] | None,
                         k: int) -> list[dict[str, dict[str, Any]] | None] | None:
    """vLLM's `prompt_logprobs` field: None for the first token, then {token id: {logprob, rank,
    decoded_token}} holding the prompt token and the k most likely."""
    if entries is None:
        return None
    return [None if e is None else {str(lp.token_id): {"logprob": lp.logprob, "rank": lp.rank,
                                                       "decoded_token": lp.token} for lp in kept(e, tid, k)}
            for tid, e in zip(prompt_ids, entries)]
