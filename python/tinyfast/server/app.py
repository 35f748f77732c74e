"""The FastAPI application: `create_app(async_llm, model_id, ...)`.

Middleware, outermost first: HTTP metrics (sees every status, 401 and 413 included), CORS (only
with `allowed_origins`; outside the guard so browsers' preflights are answered), the guard (API
key, body cap), then FastAPI's routing and error handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

import tinyfast
from tinyfast.engine.async_llm import AsyncLLM
from tinyfast.sampling_params import SamplingParams
from tinyfast.server import ollama_api, openai_api
from tinyfast.server.errors import ErrorResponse, error_responses, install_error_handlers
from tinyfast.server.generation import ServerState
from tinyfast.server.openai_protocol import ChatCompletionChunk, CompletionChunk
from tinyfast.server.middleware import GuardMiddleware, HTTPMetrics, OllamaJSONBody

log = logging.getLogger("tinyfast.server")

DEFAULT_MAX_QUEUE = 256
DEFAULT_MAX_BODY_BYTES = 8 * 2**20
WARMUP_PROMPT = "Hello"


class Health(BaseModel):
    status: str
    detail: str | None = None


def create_app(async_llm: AsyncLLM, model_id: str, *, api_key: str | None = None,
               allowed_origins: Sequence[str] | None = None, max_queue: int = DEFAULT_MAX_QUEUE,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, warmup: bool = True,
               model_info: dict[str, Any] | None = None) -> FastAPI:
    """An ASGI app serving `async_llm` as `model_id` (OpenAI and Ollama APIs, /health, /metrics).

    `max_queue` bounds the engine requests in flight (running + waiting); more get 429 with
    Retry-After. With `warmup`, one short request runs at startup and /health answers 503 until
    it is done; without, the app is ready at once. The app does not own `async_llm`: shut it down
    after the server stops.
    """
    if max_queue < 1:
        raise ValueError(f"max_queue must be >= 1, got {max_queue}")
    if max_body_bytes < 1024:
        raise ValueError(f"max_body_bytes must be >= 1024, got {max_body_bytes}")
    state = ServerState(async_llm=async_llm, model_id=model_id, max_queue=max_queue, model_info=model_info or {},
                        ready=not warmup)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(_warmup(state)) if warmup else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    app = FastAPI(title="tinyfast", version=tinyfast.__version__, lifespan=lifespan,
                  description="OpenAI- and Ollama-compatible LLM inference server")
    app.state.server = state
    install_error_handlers(app)
    app.include_router(openai_api.router)
    app.include_router(ollama_api.router)

    @app.get("/health", response_model=Health, response_model_exclude_none=True,
             responses={503: {"model": Health, "description": "not ready"}})
    async def health() -> Any:
        if async_llm.dead is not None:
            return JSONResponse({"status": "error", "detail": "the engine stopped after an error"}, status_code=503)
        if state.warmup_error is not None:
            return JSONResponse({"status": "error", "detail": state.warmup_error}, status_code=503)
        if not state.ready:
            return JSONResponse({"status": "starting", "detail": "warming up"}, status_code=503,
                                headers={"Retry-After": "1"})
        return Health(status="ok")

    @app.get("/metrics", response_class=Response, responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **error_responses(401)})
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    app.openapi = lambda: _openapi(app, state)  # type: ignore[method-assign]
    app.add_middleware(OllamaJSONBody)
    app.add_middleware(GuardMiddleware, api_key=api_key, max_body_bytes=max_body_bytes)
    if allowed_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(allowed_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.add_middleware(HTTPMetrics, observe=state.metrics.observe_http)
    return app


async def _warmup(state: ServerState) -> None:
    """Runs short requests (batch sizes 1 and 2: the decode graphs most traffic hits first) so the
    first user request does not pay for tracing; then reports ready."""
    params = SamplingParams(max_tokens=4, temperature=0.0)
    llm = state.async_llm

    async def one(i: int) -> None:
        async for _ in llm.generate(WARMUP_PROMPT, params, request_id=f"warmup-{i}"):
            pass

    try:
        await one(0)
        await asyncio.gather(one(1), one(2))
        state.ready = True
        log.info("warmup done; ready")
    except asyncio.CancelledError:
        raise
    except Exception as e:  # the server stays up and says why it is not ready
        state.warmup_error = f"warmup failed: {e!r}"[:500]
        log.exception("warmup failed")


def _openapi(app: FastAPI, state: ServerState) -> dict[str, Any]:
    """FastAPI's schema plus what only the loaded model knows: the model ids requests may name and
    the token-id range, so the published schema states every constraint the server enforces."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (CompletionChunk, ChatCompletionChunk, ErrorResponse):  # referenced by the SSE event schemas
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in body.pop("$defs", {}).items():
            comps.setdefault(name, definition)
        comps.setdefault(model.__name__, body)
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        props = comps.get(name, {}).get("properties", {})
        if "model" in props:
            props["model"]["enum"] = [state.model_id]
    vocab = state.vocab_size

    def bound_ids(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "integer" and node.get("minimum") == 0 and "maximum" not in node:
                node["maximum"] = vocab - 1
            for v in node.values():
                bound_ids(v)
        elif isinstance(node, list):
            for v in node:
                bound_ids(v)

    bound_ids(comps.get("CompletionRequest", {}).get("properties", {}).get("prompt"))
    app.openapi_schema = schema
    return schema
