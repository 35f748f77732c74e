"""SamplingParams: how one request's tokens are chosen and when it stops."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_LOGPROBS = 20  # as OpenAI's top_logprobs


@dataclass
class SamplingParams:
    """Per-request generation settings (vLLM vocabulary). Invalid values raise ValueError.

    Log probabilities (``logprobs``, ``prompt_logprobs``) are those of the raw model distribution:
    ``log_softmax`` of the logits before temperature, penalties and top-k/top-p/min-p (vLLM's
    default ``raw_logprobs``). At most ``MAX_LOGPROBS`` (20) alternatives per token.
    """

    n: int = 1
    max_tokens: int | None = 16  # None: up to the model's context
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0 or -1: off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: int | None = None
    """None: off; k: per generated token, the sampled token's log probability and the k most likely."""
    prompt_logprobs: int | None = None
    """None: off; k: per prompt token after the first, its log probability and the k most likely
    tokens at that position (``RequestOutput.prompt_logprobs``). Such a request skips prefix-cache
    hits (its prompt is computed in full, so every position has logits), like vLLM."""
    skip_special_tokens: bool = True
    stop_strings: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"SamplingParams: {msg}")

        def number(name: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                fail(f"{name} must be a number, got {v!r}")
            if lo is not None and (v <= lo if lo_open else v < lo):
                fail(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v}")
            if hi is not None and v > hi:
                fail(f"{name} must be <= {hi}, got {v}")

        def integer(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                fail(f"{name} must be an integer, got {v!r}")
            if v < lo:
                fail(f"{name} must be >= {lo}, got {v}")

        integer("n", 1)
        if self.max_tokens is not None:
            integer("max_tokens", 1)
        number("temperature", 0.0, 100.0)
        integer("top_k", -1)
        number("top_p", 0.0, 1.0, lo_open=True)
        number("min_p", 0.0, 1.0)
        number("repetition_penalty", 0.0, lo_open=True)
        number("presence_penalty", -2.0, 2.0)
        number("frequency_penalty", -2.0, 2.0)
        if self.seed is not None:
            integer("seed", 0)
            if self.seed >= 2**64:
                fail("seed must be < 2**64")
        for name in ("logprobs", "prompt_logprobs"):
            v = getattr(self, name)
            if v is not None:
                integer(name, 0)
                if v > MAX_LOGPROBS:
                    fail(f"{name} must be <= {MAX_LOGPROBS}, got {v}")
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        for s in stops:
            if not isinstance(s, str) or not s:
                fail(f"stop strings must be non-empty strings, got {s!r}")
        self.stop_strings = tuple(stops)
        for t in self.stop_token_ids or []:
            if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                fail(f"stop_token_ids must be non-negative integers, got {t!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def uses_history(self) -> bool:
        """Whether sampling needs the token history (for penalties)."""
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
