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
    "prompt_logprobs": "prompt logprobs are not supported by the engine yet",
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


def _params(req: Any, max_tokens: int | None, logprobs: int | None):
    seed = None if req.seed is None else req.seed % 2**64
    kwargs = dict(n=req.n, max_tokens=max_tokens, seed=seed, stop=req.stop, stop_token_ids=req.stop_token_ids,
                  ignore_eos=req.ignore_eos, include_stop_str_in_output=req.include_stop_str_in_output,
                  skip_special_tokens=req.skip_special_tokens, logprobs=logprobs)
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


def _top(entry: dict[int, Logprob], k: int) -> list[Logprob]:
    return sorted(entry.values(), key=lambda lp: -lp.logprob)[:k]


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
    if body.echo and body.logprobs is not None:
        raise bad_request("echo with logprobs needs prompt logprobs, which the engine does not support yet",
                          param="echo", code="unsupported_parameter")
    params = _params(body, body.max_tokens, body.logprobs)
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
        check_context(state, len(ids), body.max_tokens)
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

    def _logprobs(self, c: CompletionOutput, token_ids: list[int], entries: list[dict[int, Logprob]],
                  offset: int) -> dict[str, Any]:
        tokens, lps, tops, offsets = [], [], [], []
        for tid, entry in zip(token_ids, entries):
            lp = entry.get(tid)
            tokens.append(lp.token if lp else "")
            lps.append(lp.logprob if lp else None)
            tops.append({e.token: e.logprob for e in entry.values()})
            offsets.append(offset)
            offset += len(tokens[-1])
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}

    async def complete(self, params) -> dict[str, Any]:
        finals = await collect(generate(self.state, self.prompts, params, self.rid, "completions"), len(self.prompts))
        choices = []
        completion_tokens = 0
        cached = 0
        for i, out in enumerate(finals):
            cached += out.metrics.num_cached_tokens if out.metrics else 0
            for c in out.outputs:
                completion_tokens += len(c.token_ids)
                prefix = self.texts[i] if self.body.echo else ""
                logprobs = None
                if self.body.logprobs is not None and c.logprobs is not None:
                    logprobs = self._logprobs(c, c.token_ids, c.logprobs, len(prefix))
                choices.append({"index": self._index(i, c), "text": prefix + c.text, "logprobs": logprobs,
                                "finish_reason": _finish_reason(c)})
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
        cached = 0

        def chunk(index: int, text: str, logprobs, finish_reason) -> bytes:
            return _sse({**base, "choices": [{"index": index, "text": text, "logprobs": logprobs,
                                              "finish_reason": finish_reason}]})

        if body.echo:
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
                    completion_tokens[index] = len(c.token_ids)
                    logprobs = None
                    new = c.delta_token_ids
                    if body.logprobs is not None and c.logprobs is not None and new:
                        logprobs = self._logprobs(c, new, c.logprobs[len(c.logprobs) - len(new):],
                                                  offsets.get(index, 0))
                    offsets[index] = offsets.get(index, 0) + len(c.delta_text)
                    finish = None
                    if c.finish_reason is not None and index not in ended:  # later outputs repeat it
                        ended.add(index)
                        finish = _finish_reason(c)
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
    params = _params(body, max_tokens, logprobs)
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
                                 for e in _top(entry, k)],
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
        return {"id": self.rid, "object": "chat.completion", "created": self.created, "model": self.state.model_id,
                "choices": choices, "usage": _usage(len(self.ids), completion_tokens, cached)}

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
