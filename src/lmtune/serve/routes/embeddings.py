"""`/v1/embeddings`: OpenAI's shape, each input pooled with the request's adapter applied (the base model when none):
an encoder the way it was trained to be read (MiniLM: mean pooling, then unit length, as sentence-transformers
does), a decoder by its last token, a classification adapter the way its head reads the body. Embedding jobs share
the classification passes (between generation steps, --max-batch-size rows at a time)."""

from __future__ import annotations

import base64
import struct

from fastapi import APIRouter, Request

from lmtune.errors import LmtuneError
from lmtune.serve.routes.classify import classified
from lmtune.serve.routes.deps import EngineDep, resolve_adapter
from lmtune.serve.schemas import ApiError, EmbeddingRequest

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request, engine: EngineDep):
    adapter = resolve_adapter(engine, body.model, request)
    if body.dimensions is not None:
        raise ApiError(400, "'dimensions' is not supported: the served models were not trained to be truncated "
                            "(Matryoshka); leave it out for the full vector", param="dimensions", code="unsupported_field")
    inputs = body.inputs()
    result = await classified(engine, request, inputs, adapter, engine.submit_embedding)
    if isinstance(result, LmtuneError):
        raise ApiError(400, str(result))
    if isinstance(result, Exception):
        raise ApiError(500, f"embedding failed: {result}", "server_error", "engine_error")
    tokens = sum(len(engine.tokenize(i)) if isinstance(i, str) else len(i) for i in inputs)
    return {"object": "list", "model": body.model or engine.base_name,
            "data": [{"object": "embedding", "index": i, "embedding": encode(vector, body.encoding_format)}
                     for i, vector in enumerate(result)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def encode(vector: list[float], encoding: str) -> list[float] | str:
    """`base64`: little-endian float32, as OpenAI sends it (the `openai` client asks for it by default)."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
