"""What generation returns: one RequestOutput per request, one CompletionOutput per sample."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Logprob:
    """One token's log probability. ``rank`` is its 1-based place in the vocabulary sorted by
    probability (vLLM's meaning: 1 + the number of tokens strictly more likely); None where it
    was not computed (a sampled token outside the returned top-k)."""

    token_id: int
    logprob: float
    token: str
    rank: int | None = None

    @property
    def decoded_token(self) -> str:
        """vLLM's name for ``token``."""
        return self.token


@dataclass
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float | None = None
    logprobs: list[dict[int, Logprob]] | None = None  # per generated token: sampled + top-k
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"
    stop_reason: str | int | None = None  # the stop string or stop token that ended it
    delta_text: str = ""  # new since the previous streamed output
    delta_token_ids: list[int] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestMetrics:
    arrival_time: float
    first_token_time: float | None = None
    finished_time: float | None = None
    num_cached_tokens: int = 0


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics | None = None
    error: str | None = None
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None
    """With ``SamplingParams(prompt_logprobs=k)``, once the whole prompt has been processed: one
    entry per prompt token, None for the first (nothing predicts it), then the actual token and
    the k most likely ones at that position. Shared between a request's outputs: do not mutate."""
