"""LLM: the offline API. `LLM().generate("...")` runs the default model on this machine."""

from __future__ import annotations

import itertools
import numbers
from typing import Any, Iterator, Mapping, Sequence

from tinyfast.engine.llm_engine import EngineArgs, LLMEngine
from tinyfast.outputs import RequestOutput
from tinyfast.sampling_params import SamplingParams

Prompt = str | Sequence[int]


class LLM:
    def __init__(self, model: str | None = None, *, show_progress: bool | None = None, **engine_args: Any):
        """``show_progress``: progress bars on stderr while the model loads; None (default) shows
        them only when stderr is a terminal, so scripts, logs and servers stay quiet."""
        from tinyfast.default_model import default_model_path
        from tinyfast.models.loader import load_model

        self.model_path = model or default_model_path()
        model_obj, tokenizer = load_model(self.model_path, show_progress=show_progress)
        self.tokenizer = tokenizer
        self.engine = LLMEngine(model_obj, tokenizer, EngineArgs(**engine_args))
        self._ids = itertools.count()

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[RequestOutput]:
        """Runs every prompt to completion (continuous batching); outputs in prompt order."""
        prompts = self._as_prompt_list(prompts)
        params = self._as_params_list(sampling_params, len(prompts))
        ids = [f"gen-{next(self._ids)}" for _ in prompts]
        final: dict[str, RequestOutput] = {}
        try:
            for rid, prompt, p in zip(ids, prompts, params):
                self.engine.add_request(rid, prompt, p)
            while len(final) < len(ids):
                for out in self.engine.step():
                    if out.finished:
                        final[out.request_id] = out
                if not self.engine.has_unfinished_requests() and len(final) < len(ids):
                    raise RuntimeError("engine went idle with requests unfinished (bug)")
        except BaseException:
            for rid in ids:
                self.engine.abort_request(rid)
            raise
        for out in final.values():  # the last delta has the full text; deltas mean nothing here
            for c in out.outputs:
                c.delta_text, c.delta_token_ids = "", []
        return [final[rid] for rid in ids]

    def stream(self, prompt: Prompt, sampling_params: SamplingParams | None = None) -> Iterator[RequestOutput]:
        """Yields outputs of one request as tokens arrive (`delta_text` is the new text)."""
        rid = f"stream-{next(self._ids)}"
        self.engine.add_request(rid, prompt, sampling_params)
        try:
            while True:
                for out in self.engine.step():
                    if out.request_id == rid:
                        yield out
                        if out.finished:
                            return
        finally:
            self.engine.abort_request(rid)  # no-op once finished; frees blocks if the caller stopped early

    def chat(self, messages: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[RequestOutput]:
        """Renders one conversation (or a list of them) with the model's chat template and generates."""
        conversations = [messages] if messages and isinstance(messages[0], Mapping) else list(messages)
        if not conversations:
            raise ValueError("chat needs at least one conversation")
        prompts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True)
                   for c in conversations]
        return self.generate(prompts, sampling_params)

    @staticmethod
    def _as_prompt_list(prompts) -> list[Prompt]:
        if isinstance(prompts, str):
            return [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ValueError("no prompts given")
        if all(isinstance(p, numbers.Integral) for p in prompts):
            return [prompts]  # one prompt of token ids
        for p in prompts:
            if not isinstance(p, str) and not (isinstance(p, Sequence) and all(isinstance(t, numbers.Integral) for t in p)):
                raise TypeError("each prompt must be a string or a sequence of token ids")
        return prompts

    @staticmethod
    def _as_params_list(params, n: int) -> list[SamplingParams]:
        if params is None:
            return [SamplingParams()] * n
        if isinstance(params, SamplingParams):
            return [params] * n
        params = list(params)
        if len(params) != n:
            raise ValueError(f"{len(params)} SamplingParams for {n} prompts")
        return params
