"""What both APIs share: server state, admission to the bounded queue, prompt checks, running
engine requests with metrics, and cancelling them when the client goes away.

An engine request is aborted (its KV blocks freed) whenever its consumer stops early: leaving
`AsyncLLM.generate` early aborts, and every generator here is closed deterministically
(`aclosing`), including on cancellation by a client disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Sequence

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tinyfast.core import CapacityError
from tinyfast.engine.async_llm import AsyncLLM, EngineDeadError
from tinyfast.outputs import RequestOutput
from tinyfast.sampling_params import SamplingParams
from tinyfast.server.errors import APIError, bad_request, clip, log
from tinyfast.server.metrics import ServerMetrics
from tinyfast.tokenizer import ChatTemplateError

RETRY_AFTER_S = 1


@dataclass
class ServerState:
    async_llm: AsyncLLM
    model_id: str
    max_queue: int
    model_info: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    warmup_error: str | None = None
    in_flight: int = 0
    created: int = field(default_factory=lambda: int(time.time()))
    metrics: ServerMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = ServerMetrics(self.engine, lambda: self.in_flight)

    @property
    def engine(self):
        return self.async_llm.engine

    @property
    def tokenizer(self):
        return self.async_llm.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.async_llm.engine.max_model_len

    @property
    def vocab_size(self) -> int:
        return self.async_llm.engine.runner.vocab_size

    def check_model(self, model: str, param: str = "model") -> None:
        if model != self.model_id:
            raise APIError(400, f"model {clip(model, 100)!r} is not served here; available: {self.model_id!r}",
                           param=param, code="model_not_found")

    def acquire(self, count: int = 1) -> None:
        """Takes `count` places of the bounded queue; 429 with Retry-After when they are not free."""
        if self.async_llm.dead is not None:
            raise APIError(500, "the engine stopped after an internal error; restart the server",
                           type="server_error", code="engine_dead")
        if count > self.max_queue:
            raise bad_request(f"{count} prompts in one request but the server queue holds {self.max_queue}",
                              param="prompt")
        if self.in_flight + count > self.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise APIError(429, f"the server queue is full ({self.max_queue} requests); retry shortly",
                           code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)})
        self.in_flight += count

    def release(self, count: int = 1) -> None:
        self.in_flight -= count
        assert self.in_flight >= 0, "queue places released twice"

    @contextlib.contextmanager
    def admit(self, count: int = 1):
        self.acquire(count)
        try:
            yield
        finally:
            self.release(count)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


# --- prompts --------------------------------------------------------------------------------------


async def encode_text(state: ServerState, text: str) -> list[int]:
    # Off the event loop: a long prompt takes milliseconds to tokenize.
    return await asyncio.to_thread(state.tokenizer.encode, text)


async def render_chat(state: ServerState, messages: list[dict[str, Any]]) -> list[int]:
    def render() -> list[int]:
        return state.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)

    try:
        return await asyncio.to_thread(render)
    except ChatTemplateError as e:
        raise bad_request(f"the model's chat template rejected the conversation: {e}", param="messages",
                          code="chat_template_error") from None
    except ValueError as e:
        raise bad_request(str(e), param="messages") from None


def check_token_ids(state: ServerState, ids: Sequence[int], param: str) -> None:
    vocab = state.vocab_size
    for t in ids:
        if not 0 <= t < vocab:
            raise bad_request(f"token id {t} is outside the vocabulary (size {vocab})", param=param)


def check_context(state: ServerState, prompt_len: int, max_tokens: int | None, param: str = "max_tokens") -> None:
    """The engine's limit, checked before anything streams: prompt + max_tokens <= max_model_len."""
    limit = state.max_model_len
    if prompt_len == 0:
        raise bad_request("the prompt is empty", param="prompt")
    if prompt_len >= limit:
        raise APIError(400, f"this model's maximum context length is {limit} tokens and the prompt has "
                            f"{prompt_len}, leaving no room to generate; shorten the prompt",
                       param="prompt", code="context_length_exceeded")
    if max_tokens is not None and prompt_len + max_tokens > limit:
        raise APIError(400, f"this model's maximum context length is {limit} tokens; the request needs "
                            f"{prompt_len} for the prompt + {max_tokens} to generate; lower {param} "
                            f"to at most {limit - prompt_len}",
                       param=param, code="context_length_exceeded")


def sampling_params(param_names: Mapping[str, str] | None = None, **kwargs: Any) -> SamplingParams:
    """SamplingParams with its ValueError turned into a 400 naming the request's field."""
    try:
        return SamplingParams(**kwargs)
    except ValueError as e:
        msg = str(e).removeprefix("SamplingParams: ")
        name = msg.split(" ", 1)[0]
        raise bad_request(msg, param=(param_names or {}).get(name, name)) from None


# --- running requests -----------------------------------------------------------------------------


class _Tracker:
    """Per engine request: latency metrics and token counts."""

    def __init__(self, metrics: ServerMetrics, api: str, prompt_len: int):
        self.metrics = metrics
        self.api = api
        self.start = time.monotonic()
        self.last: float | None = None
        self.done = False
        metrics.prompt_tokens.inc(prompt_len)

    def output(self, out: RequestOutput) -> None:
        now = time.monotonic()
        new = max((len(c.delta_token_ids) for c in out.outputs), default=0)
        self.metrics.tokens_generated(sum(len(c.delta_token_ids) for c in out.outputs))
        if new:
            if self.last is None:
                self.metrics.ttft.observe(now - self.start)
            else:
                per_token = (now - self.last) / new
                for _ in range(new):
                    self.metrics.itl.observe(per_token)
            self.last = now
        if out.finished:
            self.done = True
            self.metrics.e2e.observe(now - self.start)
            reason = out.outputs[0].finish_reason if out.outputs else "stop"
            self.metrics.requests.labels(self.api, reason or "stop").inc()

    def close(self) -> None:
        if not self.done:
            self.done = True
            self.metrics.requests.labels(self.api, "abort").inc()


async def _generate_one(state: ServerState, ids: list[int], params: SamplingParams, request_id: str,
                        api: str) -> AsyncIterator[RequestOutput]:
    tracker = _Tracker(state.metrics, api, len(ids))
    try:
        async with contextlib.aclosing(state.async_llm.generate(ids, params, request_id)) as gen:
            async for out in gen:
                tracker.output(out)
                yield out
    except CapacityError as e:  # checked before; kept for races with a changed engine
        raise APIError(400, str(e), code="context_length_exceeded") from None
    except EngineDeadError as e:
        raise APIError(500, f"the engine failed: {clip(str(e), 300)}", type="server_error") from None
    except ValueError as e:
        raise bad_request(str(e)) from None
    finally:
        tracker.close()


async def generate(state: ServerState, prompts: list[list[int]], params: SamplingParams, request_id: str,
                   api: str) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(prompt index, output delta) for one engine request per prompt, interleaved as they come."""
    if len(prompts) == 1:
        async with contextlib.aclosing(_generate_one(state, prompts[0], params, request_id, api)) as gen:
            async for out in gen:
                yield 0, out
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i: int, ids: list[int]) -> None:
        try:
            async with contextlib.aclosing(_generate_one(state, ids, params, f"{request_id}-{i}", api)) as gen:
                async for out in gen:
                    queue.put_nowait((i, out))
            queue.put_nowait((i, done))
        except Exception as e:  # handed to the consumer, which re-raises it
            queue.put_nowait((i, e))

    tasks = [asyncio.create_task(pump(i, ids)) for i, ids in enumerate(prompts)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def collect(gen: AsyncIterator[tuple[int, RequestOutput]], count: int) -> list[RequestOutput]:
    """The final output of each of `count` prompts."""
    final: list[RequestOutput | None] = [None] * count
    async with contextlib.aclosing(gen):
        async for i, out in gen:
            if out.finished:
                final[i] = out
    assert all(f is not None for f in final), "a request ended without a final output"
    return final  # type: ignore[return-value]


# --- client disconnects ---------------------------------------------------------------------------

CLIENT_CLOSED = 499  # nginx's code for "client closed request"; the client never sees it


async def unless_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """Runs `work`; if the client disconnects first, cancels it (aborting its engine requests) and
    returns a placeholder response nobody receives."""
    outcome: list[Any] = []  # [("ok", value)] or [("error", exception)]

    async def run() -> None:
        try:
            outcome.append(("ok", await work))
        except Exception as e:  # re-raised outside the task group, as itself
            outcome.append(("error", e))
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                tg.cancel_scope.cancel()
                break
    if not outcome:
        return Response(status_code=CLIENT_CLOSED)
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


class StreamResponse(StreamingResponse):
    """A streamed response that stops (and closes its generator, aborting the engine requests)
    as soon as the client disconnects, even while no token is being written, and then runs
    `on_close` exactly once (it releases the request's queue places)."""

    def __init__(self, content: AsyncIterator[bytes], *, media_type: str, on_close: Callable[[], None]):
        super().__init__(content, media_type=media_type,
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:
                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client went away while we wrote
                        pass
                    except Exception:  # the body generators report errors in-band; this is a bug
                        log.exception("streamed response failed")
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                await self.listen_for_disconnect(receive)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
            self._on_close()


def streamed(state: ServerState, count: int, body: AsyncIterator[bytes], media_type: str) -> StreamResponse:
    """Admits `count` engine requests for the lifetime of a streamed response."""
    state.acquire(count)
    return StreamResponse(body, media_type=media_type, on_close=lambda: state.release(count))
