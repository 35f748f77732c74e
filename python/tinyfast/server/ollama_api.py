"""Ollama-compatible routes on the same socket: /api/generate, /api/chat (NDJSON streams by
default, as Ollama), /api/tags, /api/ps, /api/show, /api/version. Errors are `{"error": "..."}`
as Ollama's clients expect; an unknown model is a 404 as in Ollama."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime, timezone
from typing import Annotated, Any, AsyncIterator, Literal, Union

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, model_validator

import tinyfast
from tinyfast.outputs import RequestOutput
from tinyfast.server.errors import APIError, bad_request, error_payload, error_responses
from tinyfast.server.generation import (
    ServerState,
    check_context,
    collect,
    encode_text,
    generate,
    new_id,
    render_chat,
    sampling_params,
    streamed,
    unless_disconnected,
)
from tinyfast.server.openai_protocol import WHOLE, StrictRequest

router = APIRouter(prefix="/api")

NDJSON = "application/x-ndjson"
_STREAM_DOC = {"description": "one JSON object, or with `stream: true` (the default) newline-delimited JSON objects",
               "content": {NDJSON: {"schema": {"type": "string"}}}}
_ERRORS = error_responses(400, 401, 404, 413, 429, 500, ollama=True)


_Request = StrictRequest


NonEmptyStr = Annotated[str, Field(min_length=1)]


class Options(_Request):
    """The sampling options tinyfast honours; other Ollama options (num_ctx, num_thread, ...) are ignored."""

    num_predict: Annotated[int, Field(ge=-2), WHOLE] | None = Field(
        None, description="-1 or -2: up to the context length; 0: nothing")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_k: Annotated[int, Field(ge=-1), WHOLE] | None = None
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: Annotated[int, WHOLE] | None = None
    stop: Union[NonEmptyStr, Annotated[list[NonEmptyStr], Field(max_length=16)], None] = None
    repeat_penalty: float | None = Field(None, gt=0.0, le=10.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)


class GenerateRequest(_Request):
    model: str
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    stream: bool = True
    options: Options | None = None


class Message(_Request):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class ChatRequest(_Request):
    model: str
    messages: list[Message] = Field(default_factory=list)
    stream: bool = True
    options: Options | None = None


class ShowRequest(_Request):
    model: str

    @model_validator(mode="before")
    @classmethod
    def _old_name(cls, data: Any) -> Any:
        # Older Ollama clients send `name`.
        if isinstance(data, dict) and "model" not in data and isinstance(data.get("name"), str):
            return {**data, "model": data["name"]}
        return data


class ModelDetails(BaseModel):
    parent_model: str = ""
    format: str = ""
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""


class ModelEntry(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class TagsResponse(BaseModel):
    models: list[ModelEntry]


class ShowResponse(BaseModel):
    modelfile: str
    parameters: str
    template: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]


class VersionResponse(BaseModel):
    version: str


class _Final(BaseModel):
    model: str
    created_at: str
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class GenerateResponse(_Final):
    response: str


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatResponse(_Final):
    message: ChatMessageOut


# Ollama fields that would change the result if ignored.
_UNSUPPORTED = {
    "format": "structured output (format) is not supported",
    "images": "images are not supported",
    "template": "custom templates are not supported",
    "suffix": "suffix (insertion) is not supported",
    "context": "the context parameter is not supported; send the conversation to /api/chat",
    "tools": "tool calling is not supported",
}


def _state(request: Request) -> ServerState:
    return request.app.state.server


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _check(state: ServerState, body: BaseModel, model: str) -> None:
    if model.removesuffix(":latest") != state.model_id:
        raise APIError(404, f"model {model[:100]!r} not found; this server has {state.model_id!r}",
                       param="model", code="model_not_found")
    extra = dict(body.model_extra or {})
    for name, why in _UNSUPPORTED.items():
        if extra.get(name) not in (None, "", [], {}):
            raise bad_request(why, param=name, code="unsupported_parameter")


def _params(options: Options | None):
    o = options or Options()
    max_tokens = None if o.num_predict is None or o.num_predict < 0 else o.num_predict
    # Ollama's defaults where the request sets nothing (temperature 0.8, top_k 40, top_p 0.9).
    kwargs: dict[str, Any] = dict(
        max_tokens=max_tokens,
        temperature=0.8 if o.temperature is None else o.temperature,
        top_k=40 if o.top_k is None else o.top_k,
        top_p=0.9 if o.top_p is None else o.top_p,
        seed=None if o.seed is None else o.seed % 2**64,
        stop=o.stop,
    )
    for ours, theirs in (("min_p", "min_p"), ("repetition_penalty", "repeat_penalty"),
                         ("presence_penalty", "presence_penalty"), ("frequency_penalty", "frequency_penalty")):
        value = getattr(o, theirs)
        if value is not None:
            kwargs[ours] = value
    names = {"max_tokens": "options.num_predict", "repetition_penalty": "options.repeat_penalty"}
    return max_tokens, sampling_params(names, **kwargs)


def _done_reason(out: RequestOutput) -> str:
    return "length" if out.outputs[0].finish_reason == "length" else "stop"


def _stats(prompt_len: int, out: RequestOutput | None, start: float) -> dict[str, int]:
    now = time.monotonic()
    first = out.metrics.first_token_time if out and out.metrics else None
    arrival = out.metrics.arrival_time if out and out.metrics else start
    first = first or now
    return {"total_duration": int((now - start) * 1e9), "load_duration": 0, "prompt_eval_count": prompt_len,
            "prompt_eval_duration": int(max(first - arrival, 0) * 1e9),
            "eval_count": len(out.outputs[0].token_ids) if out else 0,
            "eval_duration": int(max(now - first, 0) * 1e9)}


def _line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


async def _run(request: Request, state: ServerState, body: Any, ids: list[int], params, wrap) -> Any:
    """Runs one request: NDJSON stream or a single JSON object. `wrap(text)` builds the content fields."""
    start = time.monotonic()
    rid = new_id("ollama")
    model = body.model

    async def lines() -> AsyncIterator[bytes]:
        last = None
        try:
            async with contextlib.aclosing(generate(state, [ids], params, rid, "ollama")) as gen:
                async for _, out in gen:
                    last = out
                    if out.outputs[0].delta_text:
                        yield _line({"model": model, "created_at": _now(), **wrap(out.outputs[0].delta_text),
                                     "done": False})
        except APIError as e:
            yield _line(error_payload(request.url.path, e))
            return
        yield _line({"model": model, "created_at": _now(), **wrap(""), "done": True,
                     "done_reason": _done_reason(last), **_stats(len(ids), last, start)})

    async def whole() -> dict[str, Any]:
        (out,) = await collect(generate(state, [ids], params, rid, "ollama"), 1)
        return {"model": model, "created_at": _now(), **wrap(out.outputs[0].text), "done": True,
                "done_reason": _done_reason(out), **_stats(len(ids), out, start)}

    if body.stream:
        return streamed(state, 1, lines(), NDJSON)
    with state.admit(1):
        return await unless_disconnected(request, whole())


def _immediate(body: Any, wrap, reason: str, stream: bool):
    """Answer without the engine: Ollama's "load" reply to an empty prompt, or num_predict 0."""
    payload = {"model": body.model, "created_at": _now(), **wrap(""), "done": True, "done_reason": reason}
    if stream:
        return Response(_line(payload), media_type=NDJSON)
    return payload


@router.post("/generate", response_model=GenerateResponse, response_model_exclude_none=True,
             responses={200: _STREAM_DOC, **_ERRORS})
async def api_generate(body: GenerateRequest, request: Request):
    state = _state(request)
    _check(state, body, body.model)
    max_tokens, params = _params(body.options)

    def wrap(text: str) -> dict[str, Any]:
        return {"response": text}

    if not body.prompt and not body.system:
        return _immediate(body, wrap, "load", body.stream)
    if max_tokens == 0:
        return _immediate(body, wrap, "length", body.stream)
    if body.raw:
        ids = await encode_text(state, body.prompt)
    else:
        messages = ([{"role": "system", "content": body.system}] if body.system else [])
        messages.append({"role": "user", "content": body.prompt})
        ids = await render_chat(state, messages)
    check_context(state, len(ids), max_tokens, "options.num_predict")
    return await _run(request, state, body, ids, params, wrap)


@router.post("/chat", response_model=ChatResponse, response_model_exclude_none=True,
             responses={200: _STREAM_DOC, **_ERRORS})
async def api_chat(body: ChatRequest, request: Request):
    state = _state(request)
    _check(state, body, body.model)
    max_tokens, params = _params(body.options)

    def wrap(text: str) -> dict[str, Any]:
        return {"message": {"role": "assistant", "content": text}}

    if not body.messages:
        return _immediate(body, wrap, "load", body.stream)
    if max_tokens == 0:
        return _immediate(body, wrap, "length", body.stream)
    if any(dict(m.model_extra or {}).get("images") for m in body.messages):
        raise bad_request("images are not supported", param="messages", code="unsupported_parameter")
    ids = await render_chat(state, [{"role": m.role, "content": m.content} for m in body.messages])
    check_context(state, len(ids), max_tokens, "options.num_predict")
    return await _run(request, state, body, ids, params, wrap)


def _details(state: ServerState) -> ModelDetails:
    info = state.model_info
    family = info.get("family", "")
    return ModelDetails(format=info.get("format", ""), family=family, families=[family] if family else None,
                        parameter_size=info.get("parameter_size", ""),
                        quantization_level=info.get("quantization_level", ""))


def _entry(state: ServerState) -> ModelEntry:
    info = state.model_info
    modified = info.get("modified_at") or datetime.fromtimestamp(state.created, timezone.utc).isoformat()
    return ModelEntry(name=state.model_id, model=state.model_id, modified_at=modified, size=int(info.get("size", 0)),
                      digest=info.get("digest", ""), details=_details(state))


@router.get("/tags", response_model=TagsResponse, responses=error_responses(401, ollama=True))
async def api_tags(request: Request) -> TagsResponse:
    return TagsResponse(models=[_entry(_state(request))])


@router.get("/ps", response_model=TagsResponse, responses=error_responses(401, ollama=True))
async def api_ps(request: Request) -> TagsResponse:
    return TagsResponse(models=[_entry(_state(request))])


@router.post("/show", response_model=ShowResponse, responses=error_responses(400, 401, 404, 413, ollama=True))
async def api_show(body: ShowRequest, request: Request) -> ShowResponse:
    state = _state(request)
    _check(state, body, body.model)
    # GGUF strings that are not UTF-8 arrive with surrogate escapes; JSON output cannot carry them.
    template = _text(state.tokenizer.chat_template_source or "")
    return ShowResponse(modelfile=f"# served by tinyfast\nFROM {state.model_id}\n", parameters="",
                        template=template, details=_details(state),
                        model_info={_text(k): _text(v) if isinstance(v, str) else v
                                    for k, v in state.model_info.get("metadata", {}).items()},
                        capabilities=["completion"])


def _text(s: str) -> str:
    return s.encode("utf-8", "replace").decode("utf-8")


@router.get("/version", response_model=VersionResponse, responses=error_responses(401, ollama=True))
async def api_version() -> VersionResponse:
    return VersionResponse(version=tinyfast.__version__)
