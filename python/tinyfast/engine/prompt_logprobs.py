"""Prompt logprobs: which rows of a step need logits, and their log_softmax in bounded slices.

A request with ``SamplingParams(prompt_logprobs=k)`` needs, for every prompt position p < L-1,
the distribution at p (it predicts prompt token p+1). Prefill chunks compute those positions
over several steps; each step scores the rows it computed and appends them to the request's
list, which always covers a contiguous prefix of positions. A chunk that starts before the end
of that prefix (a recompute after preemption) only scores positions not yet covered, so
entries are never duplicated or lost. Positions served from the prefix cache would have no
logits, so these requests are added to the scheduler with prefix-cache reads turned off (vLLM
does the same); their computed blocks are still registered for later requests.

Memory: the forward returns only the hidden states of these rows ([P, hidden]); logits
[rows, vocab] exist for at most ``slice_rows`` rows at a time (1 MB per row at a 262k
vocabulary), evaluated and reduced to the target's logprob and rank and the top-k before the
next slice is built. Cost: the LM head over those rows dominates (Gemma 3 270M, 1000-token
prompt: 28 s vs 12 s without prompt logprobs on this shared 2-core machine, +~100 MB peak RSS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import mlx.core as mx
import numpy as np

from tinyfast.engine.request_state import RequestState, SeqState
from tinyfast.outputs import Logprob

SLICE_BYTES = 32 << 20
"""Float32 logits per slice; the exp and comparison temporaries add ~1.25x."""


def slice_rows(vocab_size: int, budget: int = SLICE_BYTES) -> int:
    """Rows of logits scored at once: as many as fit ``budget`` bytes of float32, at least 1."""
    return max(1, budget // (4 * vocab_size))


@dataclass
class PromptRows:
    """The rows of one step's flat batch whose logits are prompt logprobs."""

    rows: np.ndarray  # [P] int32 rows of the flat batch
    targets: np.ndarray  # [P] int32 the prompt token each row predicts
    owners: list[tuple[RequestState, int]]  # (request, number of its rows), in row order
    num_logprobs: int  # the largest k among the owners


def plan(out, seqs: Mapping[int, tuple[RequestState, SeqState]], pending: set[int]) -> PromptRows | None:
    """The prompt-logprob rows of scheduler step ``out``; None when no request needs any.

    ``pending`` holds the first sequence id of every request whose prompt logprobs are not all
    computed yet; ids of requests that are gone or complete are dropped from it here. Only those
    sequences are looked at, so steps without such requests cost nothing."""
    rows: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    owners: list[tuple[RequestState, int]] = []
    for sid in list(pending):
        entry = seqs.get(sid)
        if entry is None or len(entry[0].prompt_logprobs) == len(entry[0].prompt_ids):
            pending.discard(sid)
    if not pending:
        return None
    seq_ids = np.asarray(out.seq_ids)
    where = np.flatnonzero(np.isin(seq_ids, np.fromiter(pending, dtype=seq_ids.dtype, count=len(pending))))
    if where.size == 0:
        return None
    starts = np.asarray(out.num_computed_tokens)
    counts = np.asarray(out.num_scheduled_tokens)
    qsl = np.asarray(out.query_start_loc)
    for i in where.tolist():
        req = seqs[int(seq_ids[i])][0]
        entries = req.prompt_logprobs
        start, n = int(starts[i]), int(counts[i])
        done = len(entries) - 1  # positions 0..done-1 are scored
        if start > done:
            raise RuntimeError(f"request {req.request_id!r}: prompt logprobs for positions {done}..{start - 1} "
                               f"were never computed (a prefix-cache hit on a prompt_logprobs request: bug)")
        lo, hi = done, min(start + n, len(req.prompt_ids) - 1)
        if lo >= hi:
            continue
        rows.append(np.arange(qsl[i] + lo - start, qsl[i] + hi - start, dtype=np.int32))
        targets.append(req.prompt_array[lo + 1 : hi + 1])
        owners.append((req, hi - lo))
    if not owners:
        return None
    return PromptRows(np.concatenate(rows), np.concatenate(targets).astype(np.int32), owners,
                      max(req.params.prompt_logprobs for req, _ in owners))


@dataclass
class Scores:
    logprobs: np.ndarray  # [P] float32 of the target token
    ranks: np.ndarray  # [P] int64, 1-based
    top_ids: np.ndarray  # [P, k] best first (ties: lower id first)
    top_logprobs: np.ndarray  # [P, k]


def score(logits_fn: Callable[[mx.array], mx.array], hidden: mx.array, targets: np.ndarray, k: int,
          max_rows: int) -> Scores:
    """log_softmax of ``logits_fn(hidden)`` reduced per row to the target's logprob and rank and
    the k best tokens, ``max_rows`` rows at a time.

    The logits come from the model's LM head (MLX, our kernels); the row reductions run in NumPy on
    a zero-copy view of them: rank and top-k need only the raw logits (log_softmax shifts a row by
    a constant), so the [rows, vocab] log_softmax is never built, and NumPy's max/exp/sum was ~3x
    faster here than ``mx.logsumexp`` on the CPU (measured on 32 x 262144).
    """
    p = hidden.shape[0]
    lps = np.empty(p, np.float32)
    ranks = np.empty(p, np.int64)
    top_ids: np.ndarray | None = None
    top_lps: np.ndarray | None = None
    for s in range(0, p, max_rows):
        e = min(p, s + max_rows)
        logits = logits_fn(hidden[s:e])
        mx.eval(logits)
        x = np.asarray(logits)  # shares the evaluated buffer; `logits` keeps it alive
        rows = np.arange(e - s)
        if top_ids is None:
            k = min(k, x.shape[1])
            top_ids, top_lps = np.empty((p, k), np.int64), np.empty((p, k), np.float32)
        m = x.max(axis=1)
        shifted = x - m[:, None]
        lse = m + np.log(np.exp(shifted, out=shifted).sum(axis=1))
        target = x[rows, targets[s:e]]
        lps[s:e] = target - lse
        ranks[s:e] = (x > target[:, None]).sum(axis=1) + 1
        if k:
            ids, vals = top_k(x, k)
            top_ids[s:e], top_lps[s:e] = ids, vals - lse[:, None]
    if top_ids is None:  # no rows
        top_ids, top_lps = np.empty((0, k), np.int64), np.empty((0, k), np.float32)
    return Scores(lps, ranks, top_ids, top_lps)


_BLOCK = 256


def top_k(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids and values of the k largest entries of each row of ``x`` [rows, vocab], best first,
    ties broken by the lower id (so the result does not depend on the algorithm).

    A 262k-wide ``np.argpartition`` took ~170 ms per 32 rows here. Instead: the k-th largest of
    the per-block maxima (blocks of 256) is a lower bound on the k-th largest entry (k blocks
    each hold an entry at least that large), so the top k are among the entries >= it, which for
    real logits are a handful per row.
    """
    rows, vocab = x.shape
    k = min(k, vocab)
    ids, vals = np.empty((rows, k), np.int64), np.empty((rows, k), x.dtype)
    nblocks = vocab // _BLOCK
    if nblocks >= k:
        maxima = x[:, : nblocks * _BLOCK].reshape(rows, nblocks, _BLOCK).max(axis=2)
        bounds = np.partition(maxima, nblocks - k, axis=1)[:, nblocks - k]
    else:  # a tiny vocabulary: every entry is a candidate
        bounds = np.full(rows, -np.inf, x.dtype)
    for r in range(rows):
        cand = np.flatnonzero(x[r] >= bounds[r])
        if cand.size < k:  # NaN logits defeat the bound: take the whole row
            cand = np.arange(vocab)
        cvals = x[r, cand]
        best = np.lexsort((cand, -cvals))[:k]
        ids[r], vals[r] = cand[best], cvals[best]
    return ids, vals


def record(rows: PromptRows, scores: Scores, token_text: Callable[[int], str]) -> None:
    """Appends each owner's scored positions to its ``prompt_logprobs`` list (vLLM's entries: the
    actual token with its rank, then the top-k with ranks 1..k)."""
    i = 0
    vocab_k = scores.top_ids.shape[1]
    for req, count in rows.owners:
        k = min(req.params.prompt_logprobs, vocab_k)
        for j in range(i, i + count):
            tid = int(rows.targets[j])
            top = scores.top_ids[j, :k].tolist()
            entry = {tid: Logprob(tid, float(scores.logprobs[j]), token_text(tid), int(scores.ranks[j]))}
            for r, (t, lp) in enumerate(zip(top, scores.top_logprobs[j, :k].tolist()), 1):
                if t == tid:  # the same float: keep the exact rank for ties
                    continue
                entry[t] = Logprob(t, lp, token_text(t), r)
            req.prompt_logprobs.append(entry)
        i += count
