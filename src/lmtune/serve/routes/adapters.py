"""Adapters loaded and unloaded at run time: `/v1/adapters`, and vLLM's spelling (`/v1/load_lora_adapter`,
`/v1/unload_lora_adapter`) for any adapter kind. Paths are resolved inside the adapter root (serve/store.py)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from lmtune.errors import LmtuneError
from lmtune.serve.engine import Engine
from lmtune.serve.routes.deps import EngineDep, public_base, unknown_model
from lmtune.serve.schemas import (
    ApiError,
    LoadAdapterRequest,
    VllmLoadRequest,
    VllmUnloadRequest,
)

router = APIRouter()


async def load(engine: Engine, name: str, path: str) -> dict:
    """Register and read the adapter at once (in a worker thread: it reads files), so a broken one fails here."""
    if name == engine.base_name:
        raise ApiError(409, f"'{name}' is the base model's name; choose another", "conflict_error", "name_taken",
                       param="name")
    if name in engine.adapter_names():
        raise ApiError(409, f"an adapter named '{name}' is already loaded; unload it first", "conflict_error",
                       "name_taken", param="name")
    try:
        info = await run_in_threadpool(engine.store.register, name, path)
    except LmtuneError as exc:
        raise ApiError(400, str(exc), param="path") from exc
    return {"id": info.name, "object": "model", "kind": info.kind, "parent": public_base(engine, info.base),
            "root": info.path, "method": info.method, "labels": info.labels, "loaded": info.loaded}


async def unload(engine: Engine, name: str) -> dict:
    if name not in engine.adapter_names():
        raise unknown_model(engine, name)
    try:
        await run_in_threadpool(engine.store.unregister, name)
    except LmtuneError as exc:
        raise ApiError(400, str(exc)) from exc
    return {"id": name, "object": "model", "deleted": True}


@router.post("/v1/adapters", status_code=201)
async def load_adapter(body: LoadAdapterRequest, engine: EngineDep):
    return await load(engine, body.name, body.path)


@router.delete("/v1/adapters/{name:path}")
async def unload_adapter(name: str, engine: EngineDep):
    return await unload(engine, name)


@router.post("/v1/load_lora_adapter")
async def vllm_load(body: VllmLoadRequest, engine: EngineDep):
    await load(engine, body.lora_name, body.lora_path)
    return Response(f"Success: adapter '{body.lora_name}' added successfully.", media_type="text/plain")


@router.post("/v1/unload_lora_adapter")
async def vllm_unload(body: VllmUnloadRequest, engine: EngineDep):
    await unload(engine, body.lora_name)
    return Response(f"Success: adapter '{body.lora_name}' removed successfully.", media_type="text/plain")
