"""`/v1/classify`: a label and probabilities per text, from a classification adapter's head."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from lmtune.errors import LmtuneError
from lmtune.serve.engine import Engine, EngineDead, Overloaded
from lmtune.serve.routes.deps import EngineDep, resolve_adapter, unknown_model
from lmtune.serve.routes.generation import bridge, cancel_on_disconnect
from lmtune.serve.schemas import ApiError, ClassifyRequest, overloaded_error

router = APIRouter()


@router.post("/v1/classify")
async def classify(body: ClassifyRequest, request: Request, engine: EngineDep):
    adapter = resolve_adapter(engine, body.model, request)
    if adapter is None:
        raise ApiError(400, f"'{body.model}' is the base model: classification needs an adapter trained with a "
                            "task head (see /v1/models: labels)", param="model")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise ApiError(400, "'input' is empty", param="input")
    result = await classified(engine, request, texts, adapter)
    if isinstance(result, LmtuneError):
        raise ApiError(400, str(result))
    if isinstance(result, Exception):
        raise ApiError(500, f"classification failed: {result}", "server_error", "engine_error")
    return {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": body.model,
            "data": [{"index": i, "object": "classification", "label": row["label"],
                      "probabilities": row["probabilities"]} for i, row in enumerate(result)]}


async def classified(engine: Engine, request: Request, texts: list, adapter: str | None,
                     submit=None) -> list | Exception:
    """The engine's answer for `texts` (or the error it failed with) from `submit` (default: classification; the
    embeddings route passes `engine.submit_embedding`); a client that hangs up drops the job."""
    submit = submit or engine.submit_classification
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def settle(result) -> None:
        if not done.done():
            done.set_result(result)

    try:
        request_id = await run_in_threadpool(submit, texts, adapter, bridge(loop, settle))
    except Overloaded as exc:
        raise overloaded_error(exc) from exc
    except EngineDead:
        raise
    except LmtuneError as exc:
        if adapter is not None and adapter not in engine.adapter_names():  # unloaded meanwhile
            raise unknown_model(engine, adapter) from exc
        raise ApiError(400, str(exc), param="model") from exc
    watcher = asyncio.create_task(cancel_on_disconnect(request, lambda: engine.cancel(request_id)))
    try:
        return await done
    except asyncio.CancelledError:
        engine.cancel(request_id)
        raise
    finally:
        watcher.cancel()
