"""Every error answered in OpenAI's shape, `{"error": {"message", "type", "code", "param"}}`, never plain text."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmtune.errors import LmtuneError
from lmtune.serve.engine import EngineDead, Overloaded
from lmtune.serve.schemas import (
    STATUS_TYPES,
    ApiError,
    overloaded_error,
    validation_message,
)


async def api_error(request: Request, exc: ApiError):
    return exc.response()


async def invalid_body(request: Request, exc: RequestValidationError):
    message, param = validation_message(exc)
    return ApiError(400, message, param=param, code="invalid_value").response()


async def http_error(request: Request, exc: StarletteHTTPException):  # unknown routes, wrong methods
    return ApiError(exc.status_code, str(exc.detail), STATUS_TYPES.get(exc.status_code, "api_error"),
                    headers=dict(exc.headers or {})).response()


async def overloaded(request: Request, exc: Overloaded):
    return overloaded_error(exc).response()


async def engine_dead(request: Request, exc: EngineDead):
    return ApiError(503, str(exc), "server_error", "engine_dead").response()


async def bad_input(request: Request, exc: LmtuneError):
    return ApiError(400, str(exc)).response()


async def bug(request: Request, exc: Exception):  # still OpenAI-shaped JSON, never a plain-text 500
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error", "internal_error").response()


EXCEPTION_HANDLERS = {
    ApiError: api_error,
    RequestValidationError: invalid_body,
    StarletteHTTPException: http_error,
    Overloaded: overloaded,  # handlers are found by the exception's class first: before LmtuneError's
    EngineDead: engine_dead,
    LmtuneError: bad_input,
    Exception: bug,
}
