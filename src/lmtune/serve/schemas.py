"""The HTTP layer's request bodies (pydantic, `extra="forbid"`) and its errors in OpenAI's shape."""

from __future__ import annotations

import math
from typing import Any, Literal

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


class JsonSchemaFormat(_Strict):
    name: str | None = None
    description: str | None = None
    schema_: dict = Field(alias="schema")
    """The JSON schema the output follows."""
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def constraint(self) -> tuple[str, dict | None]:
        if self.type == "json_schema" and self.json_schema is None:
            raise ApiError(400, "response_format json_schema needs 'json_schema': {'name': ..., 'schema': {...}}",
                           param="response_format.json_schema")
        return self.type, self.json_schema.schema_ if self.type == "json_schema" else None


class _Sampling(_Strict):
    model: str | None = None
    """The adapter's name, or the base model's name, or left out for the base model."""
    max_tokens: int | None = Field(None, ge=0)
    """Most new tokens to generate (default: the engine's, 128); 0 with `echo` scores the prompt only."""
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """0 is greedy decoding."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    """Choices per prompt: rows that share the prompt's one prefill."""
    user: str | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    """vLLM's: divides positive logits (multiplies negative ones) of tokens already in the prompt or the text."""
    logit_bias: dict[int, float] | None = None
    """Token id → bias added to its logit (-100..100)."""
    min_tokens: int = Field(0, ge=0)
    """vLLM's: no end of sequence and no stop string before this many tokens."""
    response_format: ResponseFormat | None = None
    """`{"type": "json_object"}` or `{"type": "json_schema", "json_schema": {"schema": {...}}}`: JSON output."""
    # Fields OpenAI documents that lmtune cannot honour: accepted by name so the refusal can say why (REFUSED).
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    functions: Any = None
    function_call: Any = None

    def sampling(self) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(not s for s in stop):
            raise ApiError(400, "stop strings must not be empty", param="stop")
        params = SamplingParams(temperature=self.temperature, top_p=self.top_p, seed=self.seed, stop=stop,
                                presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                                repetition_penalty=self.repetition_penalty, logit_bias=dict(self.logit_bias or {}),
                                min_tokens=self.min_tokens)
        if self.response_format is not None and self.response_format.type != "text":
            params.response_format = self.response_format.constraint()
        if self.max_tokens is not None:
            params.max_tokens = self.max_tokens
        return params

    def refuse_unservable(self, has_tool_template: bool, has_fim_tokens: bool = False) -> None:
        """400 naming the first field set that lmtune cannot honour, and why (never a bare "unknown field")."""
        # in the order the fields are declared (`tools` before `tool_choice`): a set's order would vary by run
        for name in (n for n in type(self).model_fields if n in self.model_fields_set):
            value = getattr(self, name)
            reason = REFUSED.get(name)
            if reason is None or value is None or ACCEPTED.get(name, lambda v: False)(value):
                continue
            if name in TOOL_FIELDS and has_tool_template:
                reason = "tool calls are not parsed from the model's output yet (its chat template has tools)"
            if name == "suffix" and has_fim_tokens:
                reason = ("fill-in-the-middle prompts are not built yet (the tokenizer has FIM tokens, but whether "
                          "the model was trained on them is unknown): put the text before the gap in the prompt")
            raise ApiError(400, f"'{name}' is not supported: {reason}", param=name, code="unsupported_field")


class CompletionRequest(_Sampling):
    prompt: str | list[int] | list[str] | list[list[int]]
    """Text, or token ids, or a list of texts or of token-id lists (one choice group per prompt)."""
    echo: bool = False
    """Put the prompt before the completion; with `logprobs`, score its tokens too."""
    logprobs: int | None = Field(None, ge=0)
    """Log-probabilities of each token and of this many most likely alternatives."""
    best_of: int | None = Field(None, ge=1)
    """Generate this many rows per prompt and return the `n` with the highest log-probability."""
    suffix: str | None = None


class TextPart(BaseModel):
    """A content part; only text is served (REFUSED_PARTS says why the others are not)."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: Any = None
    tool_call_id: str | None = None

    def text(self, where: str) -> str:
        """The message's text; 400 naming the part lmtune cannot read (images, audio, files, tool turns)."""
        if self.role in ("tool", "function") or self.tool_calls is not None:
            field_ = f"{where}.role" if self.tool_calls is None else f"{where}.tool_calls"
            raise ApiError(400, f"'{field_}': tool turns are not supported: {REFUSED['tools']}", param=field_,
                           code="unsupported_field")
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        for i, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                why = REFUSED_PARTS.get(part.type, "only text parts ({'type': 'text', 'text': ...}) are read")
                param = f"{where}.content.{i}.type"
                raise ApiError(400, f"'{param}': a {part.type!r} part is not supported: {why}", param=param,
                               code="unsupported_field")
        return "".join(part.text for part in self.content)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    """OpenAI's newer name for max_tokens."""
    logprobs: bool = False
    """Return each generated token's log-probability."""
    top_logprobs: int | None = Field(None, ge=0)
    """With `logprobs`: this many most likely alternatives per token."""
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    moderation: Any = None
    store: Any = None
    service_tier: Any = None
    metadata: dict[str, str] | None = None
    """OpenAI's tags for the caller's own bookkeeping, like `user`: accepted, not used."""
    safety_identifier: str | None = None
    """OpenAI's id of the end user, like `user`: accepted, not used."""
    prompt_cache_key: str | None = None
    """A hint for OpenAI's prompt cache (there is none here; the answer is the same): accepted, not used."""
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    """As `prompt_cache_key`."""
    prompt_cache_options: dict | None = None
    """As `prompt_cache_key`."""


TOOL_FIELDS = {"tools", "tool_choice", "parallel_tool_calls", "functions", "function_call"}
_NO_TOOLS = "the base model's chat template has no tool support, so tool calls cannot be served"
REFUSED = {
    "tools": _NO_TOOLS, "tool_choice": _NO_TOOLS, "parallel_tool_calls": _NO_TOOLS, "functions": _NO_TOOLS,
    "function_call": _NO_TOOLS,
    "suffix": "the base model has no fill-in-the-middle tokens, so text after the insertion cannot be given",
    "modalities": "lmtune serves text models: only ['text'] output",
    "audio": "lmtune serves text models: no audio output",
    "prediction": "predicted outputs (speculative decoding from a given text) are not served",
    "web_search_options": "lmtune's models do not search the web",
    "reasoning_effort": "the served models are not reasoning models",
    "verbosity": "the served models have no verbosity control (it is a reasoning-model option)",
    "moderation": "no moderation model is served",
    "store": "completions are not stored (only store: false is accepted)",
    "service_tier": "the server has one service tier (only 'auto' and 'default' are accepted)",
}
ACCEPTED = {
    "modalities": lambda v: v == ["text"],
    "tool_choice": lambda v: v == "none",
    "parallel_tool_calls": lambda v: True,  # meaningless without tools, which are refused on their own
    "store": lambda v: v is False,
    "service_tier": lambda v: v in ("auto", "default"),
}
"""Values of refused fields that ask for nothing lmtune lacks (what clients send by default)."""
REFUSED_PARTS = {
    "image_url": "lmtune serves text-only base models (no vision encoder)",
    "input_image": "lmtune serves text-only base models (no vision encoder)",
    "input_audio": "lmtune serves text-only base models (no audio encoder)",
    "file": "files are not read: send their text as a text part",
}


class ClassifyRequest(_Strict):
    model: str
    """The classification adapter (a run trained with a task head)."""
    input: str | list[str]
    """One text or a list of texts."""
    user: str | None = None


class EmbeddingRequest(_Strict):
    model: str | None = None
    """The adapter whose embeddings to compute (or the base model, or left out)."""
    input: str | list[str] | list[int] | list[list[int]]
    """A text, texts, token ids, or lists of token ids."""
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    def inputs(self) -> list[str | list[int]]:
        if isinstance(self.input, str):
            return [self.input]
        if self.input and isinstance(self.input[0], int):
            return [self.input]
        if not self.input:
            raise ApiError(400, "'input' is empty", param="input")
        return list(self.input)


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


class TokenizeRequest(_Strict):
    """vLLM's `/tokenize`: a prompt, or chat messages rendered as the adapter's chat requests are."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    """For `prompt`: add the tokenizer's special tokens (BOS), as a completion request does."""
    return_token_strs: bool = False
    """Also return each token's text."""


class DetokenizeRequest(_Strict):
    model: str | None = None
    tokens: list[int]
