"""The HTTP layer's request bodies (pydantic, `extra="forbid"`) and its errors in OpenAI's shape."""

from __future__ import annotations

import math
from typing import Literal

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from lmtune.serve.engine import Overloaded, SamplingParams

ADAPTER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$"

# ---- errors ------------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
                 429: "rate_limit_error"}


def overloaded_error(exc: Overloaded) -> ApiError:
    retry = max(1, math.ceil(exc.retry_after))
    return ApiError(429, str(exc) or "the server is overloaded; retry later", "rate_limit_error", "overloaded",
                    headers={"Retry-After": str(retry)})


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "TextPart"}
_TYPE_TAG_PREFIXES = ("list[", "function-", "tagged-union[", "json-or-python[", "lax-or-strict[", "nullable[")


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts, first_param = [], None
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
        # union members add their type's name to the location (prompt.str, prompt.list[int].0): drop those
        param = ".".join(x for x in loc if x not in _TYPE_TAGS and not x.startswith(_TYPE_TAG_PREFIXES)) or None
        first_param = first_param or param
        if err.get("type") == "extra_forbidden":
            parts.append(f"unknown field '{param}' (not accepted by this route)")
        elif err.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}")
        elif err.get("type") == "missing":
            parts.append(f"'{param}' is required")
        else:
            parts.append(f"'{param}': {err.get('msg')}" if param else str(err.get("msg")))
    seen = list(dict.fromkeys(parts))  # unions repeat a message per member
    return "; ".join(seen) or "invalid request", first_param


# ---- request bodies -----------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False
    """Send a last chunk with token usage (and no choices) before `[DONE]`."""


class _Sampling(_Strict):
    model: str | None = None
    """The adapter's name, or the base model's name, or left out for the base model."""
    max_tokens: int | None = Field(None, ge=1)
    """Most new tokens to generate (default: the engine's, 128)."""
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """0 is greedy decoding."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    """Only 1 is served: one choice per request."""
    user: str | None = None

    def sampling(self) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(not s for s in stop):
            raise ApiError(400, "stop strings must not be empty", param="stop")
        params = SamplingParams(temperature=self.temperature, top_p=self.top_p, seed=self.seed, stop=stop)
        if self.max_tokens is not None:
            params.max_tokens = self.max_tokens
        return params


class CompletionRequest(_Sampling):
    prompt: str | list[int] | list[str]
    """Text, or token ids, or a list holding one text."""


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    """OpenAI's newer name for max_tokens."""


class ClassifyRequest(_Strict):
    model: str
    """The classification adapter (a run trained with a task head)."""
    input: str | list[str]
    """One text or a list of texts."""
    user: str | None = None


class LoadAdapterRequest(_Strict):
    name: str = Field(pattern=ADAPTER_NAME)
    """The name requests will use in `model`."""
    path: str = Field(min_length=1)
    """The run directory, relative to the server's adapter root."""


class VllmLoadRequest(_Strict):
    lora_name: str = Field(pattern=ADAPTER_NAME)
    lora_path: str = Field(min_length=1)


class VllmUnloadRequest(_Strict):
    lora_name: str
    lora_int_id: int | None = None
