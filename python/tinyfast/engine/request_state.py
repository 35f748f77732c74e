"""Per-request bookkeeping on the Python side: what was generated, streamed and why it ended."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from tinyfast import _C
from tinyfast.outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from tinyfast.sampling_params import SamplingParams


@dataclass
class SeqState:
    """One sample stream (a request with n > 1 has n of them)."""

    seq_id: int
    index: int
    rng_state: np.ndarray  # [4] uint64, advanced by the sampler
    detokenizer: object
    output_ids: list[int] = field(default_factory=list)
    text: str = ""
    streamed_chars: int = 0
    streamed_tokens: int = 0
    cumulative_logprob: float = 0.0
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    history: np.ndarray | None = None  # output ids for penalties, grown geometrically

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def output_history(self) -> np.ndarray:
        n = len(self.output_ids)
        if self.history is None or self.history.shape[0] < n:
            self.history = np.empty(max(16, 2 * n), dtype=np.int32)
            self.history[:n] = self.output_ids
        elif n:
            self.history[n - 1] = self.output_ids[n - 1]
        return self.history[:n]


def _rng_state(seed: int | None, index: int) -> np.ndarray:
    if seed is None:
        seed = int.from_bytes(np.random.default_rng().bytes(8), "little")
    # Sample i of a seeded request gets its own stream, the same in every batch.
    return _C.seed_rng_state((seed + index * 0x9E3779B97F4A7C15) % 2**64)


class RequestState:
    def __init__(self, request_id: str, prompt: str | None, prompt_ids: list[int], params: SamplingParams,
                 seq_ids: list[int], make_detokenizer, stop_ids: frozenset[int], max_new_tokens: int):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_ids = prompt_ids
        self.prompt_array = np.asarray(prompt_ids, dtype=np.int32)
        self.params = params
        self.stop_ids = stop_ids
        self.max_new_tokens = max_new_tokens
        self.seqs = [
            SeqState(seq_id=s, index=i, rng_state=_rng_state(params.seed, i),
                     detokenizer=make_detokenizer(), logprobs=[] if params.logprobs is not None else None)
            for i, s in enumerate(seq_ids)
        ]
        self.forked = params.n == 1
        # [None, entry for token 1, ...]: grows by whole chunks (engine/prompt_logprobs.py), so
        # len - 1 prompt positions are scored; complete at len(prompt_ids).
        self.prompt_logprobs: list[dict[int, Logprob] | None] | None = (
            [None] if params.prompt_logprobs is not None else None)
        self.metrics = RequestMetrics(arrival_time=time.monotonic())
        self.error: str | None = None

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.seqs)

    def make_output(self, stream_delta: bool) -> RequestOutput:
        """A snapshot; with stream_delta, the delta fields hold what is new since the last call."""
        outs = []
        for s in self.seqs:
            visible = len(s.text) if s.finished else max(s.streamed_chars, len(s.text) - self._holdback())
            out = CompletionOutput(
                index=s.index,
                text=s.text[:visible],
                token_ids=list(s.output_ids),
                cumulative_logprob=s.cumulative_logprob if s.logprobs is not None else None,
                logprobs=list(s.logprobs) if s.logprobs is not None else None,
                finish_reason=s.finish_reason,
                stop_reason=s.stop_reason,
            )
            if stream_delta:
                out.delta_text = s.text[s.streamed_chars : visible]
                out.delta_token_ids = s.output_ids[s.streamed_tokens :]
                s.streamed_chars = visible
                s.streamed_tokens = len(s.output_ids)
            outs.append(out)
        return RequestOutput(
            request_id=self.request_id, prompt=self.prompt, prompt_token_ids=list(self.prompt_ids), outputs=outs,
            finished=self.finished, metrics=self.metrics, error=self.error,
            prompt_logprobs=self.prompt_logprobs if self.prompt_logprobs_complete else None,
        )

    @property
    def prompt_logprobs_complete(self) -> bool:
        return self.prompt_logprobs is not None and len(self.prompt_logprobs) == len(self.prompt_ids)

    def _holdback(self) -> int:
        # Text that could still turn out to be the start of a stop string is not shown yet.
        return max((len(s) for s in self.params.stop_strings), default=1) - 1
