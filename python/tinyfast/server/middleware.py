"""ASGI middleware: API key and body cap (GuardMiddleware), per-route HTTP counters (HTTPMetrics).

Pure ASGI rather than Starlette's BaseHTTPMiddleware, which buffers streamed responses and hides
client disconnects from the endpoint.
"""

from __future__ import annotations

import hmac
import time
from typing import Any, Awaitable, Callable

from tinyfast.server.errors import APIError, error_payload

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})


async def send_json_error(scope: Scope, send: Send, err: APIError) -> None:
    import json

    body = json.dumps(error_payload(scope.get("path", ""), err)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    for k, v in (err.headers or {}).items():
        headers.append((k.lower().encode("latin-1"), v.encode("latin-1")))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class GuardMiddleware:
    """Rejects requests without the API key (every path but /health) with 401 and bodies over
    `max_body_bytes` with 413, before the application reads anything.

    The body is read here whole (every route needs all of it anyway) and replayed to the app;
    later `receive()` calls go to the server, so the app still sees `http.disconnect`.
    """

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.api_key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
            return await send_json_error(scope, send, APIError(
                401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"}))
        too_large = APIError(413, f"request body is larger than the {self.max_body_bytes} byte limit",
                             code="request_too_large")
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await send_json_error(scope, send, APIError(400, "invalid Content-Length header"))
            if declared > self.max_body_bytes:
                return await send_json_error(scope, send, too_large)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await send_json_error(scope, send, too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorized(self, scope: Scope) -> bool:
        value = _header(scope, b"authorization")
        if value is None:
            return False
        scheme, _, token = value.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return v
    return None


class HTTPMetrics:
    """Counts responses by route template (never the raw path: unknown paths are 'other') and status."""

    def __init__(self, app: ASGIApp, *, observe: Callable[[str, str, int, float], None]):
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500
        start = time.monotonic()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "other"
            self.observe(scope.get("method", ""), path, status, time.monotonic() - start)


class OllamaJSONBody:
    """Ollama reads every /api/* body as JSON whatever its Content-Type (its documented examples
    use `curl -d`, which sends application/x-www-form-urlencoded); FastAPI parses only JSON types."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() != b"content-type"]
            scope["headers"] = [*headers, (b"content-type", b"application/json")]  # in place: outer
            # middleware reads the matched route from this same dict
        await self.app(scope, receive, send)
