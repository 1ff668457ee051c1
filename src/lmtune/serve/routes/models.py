"""`/v1/models`: the base model and every adapter, with its kind and parent (vLLM's listing)."""

from __future__ import annotations

import time

from fastapi import APIRouter

from lmtune.serve.engine import AdapterInfo, Engine
from lmtune.serve.routes.deps import EngineDep, public_base, unknown_model

router = APIRouter()


def base_entry(engine: Engine, created: int) -> dict:
    base = engine.base_name
    return {"id": base, "object": "model", "created": created, "owned_by": "lmtune", "root": base, "parent": None,
            "kind": "base", "base_kind": engine.base_kind}


def adapter_entry(engine: Engine, info: AdapterInfo, created: int) -> dict:
    return {"id": info.name, "object": "model", "created": created, "owned_by": "lmtune", "root": info.path,
            "parent": public_base(engine, info.base), "kind": info.kind, "method": info.method,
            "loaded": info.loaded, "nbytes": info.nbytes, "labels": info.labels}


def listing(engine: Engine) -> list[dict]:
    created = int(time.time())
    adapters = sorted(engine.store.list(), key=lambda info: info.name)
    return [base_entry(engine, created), *(adapter_entry(engine, info, created) for info in adapters)]


@router.get("/v1/models")
async def models(engine: EngineDep):
    return {"object": "list", "data": listing(engine)}


@router.get("/v1/models/{name:path}")
async def model(name: str, engine: EngineDep):
    for entry in listing(engine):
        if entry["id"] == name:
            return entry
    raise unknown_model(engine, name)
