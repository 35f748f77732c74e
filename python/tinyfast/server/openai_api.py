"""OpenAI-compatible routes: /v1/completions, /v1/chat/completions (JSON or SSE), /v1/models."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request

from tinyfast.outputs import CompletionOutput, Logprob, RequestOutput
from tinyfast.server.errors import APIError, bad_request, error_payload, error_responses
from tinyfast.server.generation import (
    ServerState,
    check_context,
    check_token_ids,
    collect,
    encode_text,
    generate,
    new_id,
    render_chat,
    sampling_params,
    streamed,
    unless_disconnected,
)
from tinyfast.server.logprobs_format import legacy_logprobs, top_logprobs, vllm_prompt_logprobs
from tinyfast.server.openai_protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    extra_fields,
    sse_event_schema,
)

router = APIRouter()

SSE = "text/event-stream"


def _stream_doc(chunk) -> dict:
    return {"description": "JSON, or with `stream: true` server-sent events ending with `data: [DONE]`",
            "content": {SSE: {"schema": sse_event_schema(chunk)}}}


_GENERATION_ERRORS = error_responses(400, 401, 413, 429, 500)

# Fields OpenAI defines that would change the result if silently ignored.
_UNSUPPORTED = {
    "suffix": "suffix (insertion) is not supported",
    "logit_bias": "logit_bias is not supported",
    "tools": "tool calling is not supported",
    "functions": "function calling is not supported",
    "guided_json": "guided decoding is not supported",
    "guided_regex": "guided decoding is not supported",
    "guided_choice": "guided decoding is not supported",
}


def _state(request: Request) -> ServerState:
    return request.app.state.server


def _refuse_unsupported(req: Any) -> None:
    extra = extra_fields(req)
    for name, why in _UNSUPPORTED.items():
        if extra.get(name) not in (None, [], {}, ""):
            raise bad_request(why, param=name, code="unsupported_parameter")
    best_of = extra.get("best_of")
    if best_of is not None and best_of != req.n:
        raise bad_request("best_of is not supported (only best_of == n)", param="best_of",
                          code="unsupported_parameter")
    fmt = extra.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise bad_request("response_format other than {'type': 'text'} is not supported",
                          param="response_format", code="unsupported_parameter")
    choice = extra.get("tool_choice")
    if choice not in (None, "none", "auto"):
        raise bad_request("tool calling is not supported", param="tool_choice", code="unsupported_parameter")


def _params(req: Any, max_tokens: int | None, logprobs: int | None, prompt_logprobs: int | None = None):
    seed = None if req.seed is None else req.seed % 2**64
    kwargs = dict(n=req.n, max_tokens=max_tokens, seed=seed, stop=req.stop, stop_token_ids=req.stop_token_ids,
                  ignore_eos=req.ignore_eos, include_stop_str_in_output=req.include_stop_str_in_output,
                  skip_special_tokens=req.skip_special_tokens, logprobs=logprobs, prompt_logprobs=prompt_logprobs)
    for name in ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                 "repetition_penalty"):
        value = getattr(req, name)
        if value is not None:
            kwargs[name] = value
    return sampling_params(**kwargs)


def _finish_reason(c: CompletionOutput) -> str | None:
    if c.finish_reason is None:
        return None
    return "length" if c.finish_reason == "length" else "stop"


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


_DONE = b"data: [DONE]\n\n"


def _usage(prompt_tokens: int, completion_tokens: int, cached: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _refuse_streamed_prompt_logprobs(req: Any) -> None:
    if req.stream and req.prompt_logprobs is not None:
        raise bad_request("prompt_logprobs is not available with stream: true", param="prompt_logprobs",
                          code="unsupported_parameter")


def _max_of(*values: int | None) -> int | None:
    given = [v for v in values if v is not None]
    return max(given) if given else None


async def _streaming_body(request_path: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Ends every stream with [DONE]; an error after the headers went out is sent in-band."""
    try:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk
    except APIError as e:
        yield _sse(error_payload(request_path, e))
    yield _DONE


# --- /v1/models -----------------------------------------------------------------------------------


@router.get("/v1/models", response_model=ModelList, responses=error_responses(401))
async def list_models(request: Request) -> ModelList:
    state = _state(request)
    return ModelList(data=[ModelCard(id=state.model_id, created=state.created, max_model_len=state.max_model_len)])


@router.get("/v1/models/{model}", response_model=ModelCard, responses=error_responses(401, 404))
async def get_model(model: str, request: Request) -> ModelCard:
    state = _state(request)
    if model != state.model_id:
        raise APIError(404, f"model {model[:100]!r} is not served here", code="model_not_found", param="model")
    return ModelCard(id=state.model_id, created=state.created, max_model_len=state.max_model_len)


# --- /v1/completions ------------------------------------------------------------------------------


@router.post("/v1/completions", response_model=CompletionResponse,
             responses={200: _stream_doc(CompletionChunk), **_GENERATION_ERRORS})
async def completions(body: CompletionRequest, request: Request):
    state = _state(request)
    state.check_model(body.model)
    _refuse_unsupported(body)
    _refuse_streamed_prompt_logprobs(body)
    if body.max_tokens == 0 and not body.echo:
        raise bad_request("max_tokens must be >= 1 (0 only with echo: true, to score the prompt)",
                          param="max_tokens", code="invalid_parameter_combination")
    # max_tokens 0 (score the prompt: lm-eval's log-likelihood requests) runs one generation step,
    # as vLLM does, and returns none of it. echo + logprobs reports the prompt's logprobs too.
    max_tokens = 1 if body.max_tokens == 0 else body.max_tokens
    prompt_k = _max_of(body.prompt_logprobs, body.logprobs if body.echo else None)
    params = _params(body, max_tokens, body.logprobs, prompt_k)
    raw = body.prompt
    if isinstance(raw, str):
        raw = [raw]
    elif raw and isinstance(raw[0], int):
        raw = [raw]
    prompts: list[list[int]] = []
    texts: list[str] = []
    for p in raw:
        if isinstance(p, str):
            ids = await encode_text(state, p)
            texts.append(p)
        else:
            ids = list(p)
            check_token_ids(state, ids, "prompt")
            texts.append(state.tokenizer.decode(ids, skip_special_tokens=False) if body.echo else "")
        check_context(state, len(ids), max_tokens)
        prompts.append(ids)
    rid = new_id("cmpl")
    created = int(time.time())
    run = _Completion(state, body, rid, created, prompts, texts)
    if body.stream:
        return streamed(state, len(prompts), _streaming_body(request.url.path, run.stream(params)), SSE)
    with state.admit(len(prompts)):
        return await unless_disconnected(request, run.complete(params))


class _Completion:
    def __init__(self, state: ServerState, body: CompletionRequest, rid: str, created: int,
                 prompts: list[list[int]], texts: list[str]):
        self.state, self.body, self.rid, self.created = state, body, rid, created
        self.prompts, self.texts = prompts, texts

    def _index(self, prompt_index: int, c: CompletionOutput) -> int:
        return prompt_index * self.body.n + c.index

    @property
    def _score_only(self) -> bool:
        return self.body.max_tokens == 0

    @property
    def _echo_logprobs(self) -> bool:
        return self.body.echo and self.body.logprobs is not None

    def _logprobs(self, token_ids: list[int], entries: list[dict[int, Logprob] | None],
                  offset: int) -> dict[str, Any]:
        return legacy_logprobs(token_ids, entries, self.body.logprobs or 0, offset, self.state.tokenizer.token_bytes)

    def _generated(self, c: CompletionOutput) -> tuple[str, list[int], list[dict[int, Logprob]]]:
        if self._score_only:  # the one token generated to get there is not part of the answer
            return "", [], []
        return c.text, c.token_ids, c.logprobs or []

    def _prompt_logprobs_field(self, i: int, out: RequestOutput) -> Any:
        if self.body.prompt_logprobs is None:
            return None
        return vllm_prompt_logprobs(self.prompts[i], out.prompt_logprobs, self.body.prompt_logprobs)

    async def complete(self, params) -> dict[str, Any]:
        finals = await collect(generate(self.state, self.prompts, params, self.rid, "completions"), len(self.prompts))
        choices = []
        completion_tokens = 0
        cached = 0
        for i, out in enumerate(finals):
            cached += out.metrics.num_cached_tokens if out.metrics else 0
            for c in out.outputs:
                text, token_ids, entries = self._generated(c)
                completion_tokens += len(token_ids)
                prefix = self.texts[i] if self.body.echo else ""
                logprobs = None
                if self._echo_logprobs:
                    logprobs = self._logprobs(self.prompts[i] + token_ids, out.prompt_logprobs + entries, 0)
                elif self.body.logprobs is not None:
                    logprobs = self._logprobs(token_ids, entries, len(prefix))
                choices.append({"index": self._index(i, c), "text": prefix + text, "logprobs": logprobs,
                                "finish_reason": "length" if self._score_only else _finish_reason(c),
                                "prompt_logprobs": self._prompt_logprobs_field(i, out)})
        choices.sort(key=lambda ch: ch["index"])
        prompt_tokens = sum(len(p) for p in self.prompts)
        return {"id": self.rid, "object": "text_completion", "created": self.created, "model": self.state.model_id,
                "choices": choices, "usage": _usage(prompt_tokens, completion_tokens, cached)}

    async def stream(self, params) -> AsyncIterator[bytes]:
        body = self.body
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        base = {"id": self.rid, "object": "text_completion", "created": self.created, "model": self.state.model_id}
        if include_usage:
            base["usage"] = None
        offsets: dict[int, int] = {}
        completion_tokens: dict[int, int] = {}
        ended: set[int] = set()
        echoed: set[int] = set()
        cached = 0

        def chunk(index: int, text: str, logprobs, finish_reason) -> bytes:
            return _sse({**base, "choices": [{"index": index, "text": text, "logprobs": logprobs,
                                              "finish_reason": finish_reason}]})

        if body.echo and not self._echo_logprobs:
            for i, text in enumerate(self.texts):
                for j in range(body.n):
                    offsets[i * body.n + j] = len(text)
                    yield chunk(i * body.n + j, text, None, None)
        async with contextlib.aclosing(generate(self.state, self.prompts, params, self.rid, "completions")) as gen:
            async for i, out in gen:
                if out.finished and out.metrics:
                    cached += out.metrics.num_cached_tokens
                for c in out.outputs:
                    index = self._index(i, c)
                    if self._echo_logprobs and index not in echoed:
                        # The prompt's logprobs exist once its prefill is done: the first output.
                        echoed.add(index)
                        logprobs = self._logprobs(self.prompts[i], out.prompt_logprobs, 0)
                        offsets[index] = (logprobs["text_offset"][-1] + len(logprobs["tokens"][-1])
                                          if logprobs["tokens"] else 0)
                        yield chunk(index, self.texts[i], logprobs, None)
                    finish = None
                    if c.finish_reason is not None and index not in ended:  # later outputs repeat it
                        ended.add(index)
                        finish = "length" if self._score_only else _finish_reason(c)
                    if self._score_only:
                        if finish:
                            yield chunk(index, "", None, finish)
                        continue
                    completion_tokens[index] = len(c.token_ids)
                    logprobs = None
                    new = c.delta_token_ids
                    if body.logprobs is not None and c.logprobs is not None and new:
                        logprobs = self._logprobs(new, c.logprobs[len(c.logprobs) - len(new):],
                                                  offsets.get(index, 0))
                    offsets[index] = offsets.get(index, 0) + len(c.delta_text)
                    if c.delta_text or logprobs or finish:
                        yield chunk(index, c.delta_text, logprobs, finish)
        if include_usage:
            prompt_tokens = sum(len(p) for p in self.prompts)
            yield _sse({**base, "choices": [],
                        "usage": _usage(prompt_tokens, sum(completion_tokens.values()), cached)})


# --- /v1/chat/completions -------------------------------------------------------------------------


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse,
             responses={200: _stream_doc(ChatCompletionChunk), **_GENERATION_ERRORS})
async def chat_completions(body: ChatCompletionRequest, request: Request):
    state = _state(request)
    state.check_model(body.model)
    _refuse_unsupported(body)
    _refuse_streamed_prompt_logprobs(body)
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs",
                          code="invalid_parameter_combination")
    messages = []
    for m in body.messages:
        content = m.content if isinstance(m.content, str) else "\n".join(p.text for p in m.content)
        messages.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    params = _params(body, max_tokens, logprobs, body.prompt_logprobs)
    ids = await render_chat(state, messages)
    check_context(state, len(ids), max_tokens, param)
    run = _Chat(state, body, new_id("chatcmpl"), int(time.time()), ids)
    if body.stream:
        return streamed(state, 1, _streaming_body(request.url.path, run.stream(params)), SSE)
    with state.admit(1):
        return await unless_disconnected(request, run.complete(params))


class _Chat:
    def __init__(self, state: ServerState, body: ChatCompletionRequest, rid: str, created: int, ids: list[int]):
        self.state, self.body, self.rid, self.created, self.ids = state, body, rid, created, ids

    def _logprobs(self, token_ids: list[int], entries: list[dict[int, Logprob]]) -> dict[str, Any]:
        k = self.body.top_logprobs or 0
        token_bytes = self.state.tokenizer.token_bytes
        content = []
        for tid, entry in zip(token_ids, entries):
            lp = entry.get(tid)
            if lp is None:
                continue
            content.append({
                "token": lp.token, "logprob": lp.logprob, "bytes": list(token_bytes(tid)),
                "top_logprobs": [{"token": e.token, "logprob": e.logprob, "bytes": list(token_bytes(e.token_id))}
                                 for e in top_logprobs(entry, k)],
            })
        return {"content": content}

    async def complete(self, params) -> dict[str, Any]:
        (out,) = await collect(generate(self.state, [self.ids], params, self.rid, "chat"), 1)
        choices = []
        for c in out.outputs:
            logprobs = None
            if self.body.logprobs and c.logprobs is not None:
                logprobs = self._logprobs(c.token_ids, c.logprobs)
            choices.append({"index": c.index, "message": {"role": "assistant", "content": c.text},
                            "logprobs": logprobs, "finish_reason": _finish_reason(c)})
        completion_tokens = sum(len(c.token_ids) for c in out.outputs)
        cached = out.metrics.num_cached_tokens if out.metrics else 0
        prompt_logprobs = None
        if self.body.prompt_logprobs is not None:
            prompt_logprobs = vllm_prompt_logprobs(self.ids, out.prompt_logprobs, self.body.prompt_logprobs)
        return {"id": self.rid, "object": "chat.completion", "created": self.created, "model": self.state.model_id,
                "choices": choices, "usage": _usage(len(self.ids), completion_tokens, cached),
                "prompt_logprobs": prompt_logprobs}

    async def stream(self, params) -> AsyncIterator[bytes]:
        body = self.body
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        base = {"id": self.rid, "object": "chat.completion.chunk", "created": self.created,
                "model": self.state.model_id}
        if include_usage:
            base["usage"] = None

        def chunk(index: int, delta: dict[str, Any], logprobs, finish_reason) -> bytes:
            return _sse({**base, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                              "finish_reason": finish_reason}]})

        for j in range(body.n):  # the role first, before any token: clients show a reply has started
            yield chunk(j, {"role": "assistant", "content": ""}, None, None)
        last: RequestOutput | None = None
        ended: set[int] = set()
        async with contextlib.aclosing(generate(self.state, [self.ids], params, self.rid, "chat")) as gen:
            async for _, out in gen:
                last = out
                for c in out.outputs:
                    new = c.delta_token_ids
                    logprobs = None
                    if body.logprobs and c.logprobs is not None and new:
                        logprobs = self._logprobs(new, c.logprobs[len(c.logprobs) - len(new):])
                    if c.delta_text or logprobs:
                        yield chunk(c.index, {"content": c.delta_text}, logprobs, None)
                    if c.finish_reason is not None and c.index not in ended:  # later outputs repeat it
                        ended.add(c.index)
                        yield chunk(c.index, {}, None, _finish_reason(c))
        if include_usage and last is not None:
            completion_tokens = sum(len(c.token_ids) for c in last.outputs)
            cached = last.metrics.num_cached_tokens if last.metrics else 0
            yield _sse({**base, "choices": [], "usage": _usage(len(self.ids), completion_tokens, cached)})
