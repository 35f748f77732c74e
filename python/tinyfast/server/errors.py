"""Error responses: the OpenAI shape `{"error": {"message", "type", "param", "code"}}` on every
route, except Ollama's `/api/*` routes, whose clients expect `{"error": "message"}`.

Messages never echo request content back: validation errors name the field and the rule only,
and every message is capped, so a multi-megabyte prompt cannot come back in an error.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tinyfast.server")

MAX_MESSAGE_CHARS = 1000
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    """An error the client should see, with its HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.code = code
        self.headers = headers


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI error body."""

    error: ErrorInfo


class OllamaErrorResponse(BaseModel):
    """Ollama error body."""

    error: str


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_ollama_path(path: str) -> bool:
    return path.startswith("/api/")


def error_payload(path: str, err: APIError) -> dict[str, Any]:
    message = clip(err.message)
    if is_ollama_path(path):
        return {"error": message}
    return {"error": {"message": message, "type": err.type, "param": err.param, "code": err.code}}


def error_response(path: str, err: APIError) -> JSONResponse:
    return JSONResponse(error_payload(path, err), status_code=err.status, headers=err.headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts: list[str] = []
    param = None
    for e in exc.errors()[:5]:
        loc = [str(x) for x in e.get("loc", ()) if x != "body" and not _is_union_tag(x)]
        if e.get("type") == "json_invalid":
            return "the request body is not valid JSON", None
        where = ".".join(loc) or "body"
        if param is None and loc:
            param = where
        # `msg` states the rule (type, bound, allowed values); `input` is never included.
        parts.append(f"{where}: {clip(str(e.get('msg', 'invalid')), 200)}")
    more = len(exc.errors()) - 5
    if more > 0:
        parts.append(f"and {more} more")
    return "invalid request: " + "; ".join(parts), param


def _is_union_tag(part: Any) -> bool:
    """pydantic puts the union member it tried into `loc` ("constrained-str", "list[int]",
    "TextPart"); field names are lower_snake_case and indices are ints."""
    if isinstance(part, int):
        return False
    part = str(part)
    return "[" in part or "-" in part or part[:1].isupper() or part in ("str", "int", "float", "bool", "none")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(request.url.path, APIError(400, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            detail = f"no route {request.method} {clip(request.url.path, 200)}"
        return error_response(request.url.path, APIError(exc.status_code, detail, headers=exc.headers))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(request.url.path, APIError(500, "internal server error", type="server_error"))


def error_responses(*statuses: int, ollama: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can return."""
    model = OllamaErrorResponse if ollama else ErrorResponse
    return {s: {"model": model, "description": _DESCRIPTIONS.get(s, "error")} for s in statuses}


_DESCRIPTIONS = {
    400: "invalid request (bad parameters, unknown model, context length exceeded, invalid JSON)",
    401: "missing or wrong API key",
    404: "unknown model",
    413: "request body over the size limit",
    429: "request queue full; retry after the Retry-After seconds",
    500: "internal error",
    503: "not ready yet",
}
