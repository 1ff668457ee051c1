"""`/health` for load balancers and `/metrics` for Prometheus: both open without a key (serve/guard.py)."""

from __future__ import annotations

import json

from fastapi import APIRouter
from fastapi.responses import Response

from lmtune.serve.routes.deps import EngineDep, MetricsDep

router = APIRouter()


@router.get("/health")
async def health(engine: EngineDep):
    """503 once the scheduler thread has stopped: a load balancer takes this replica out. `adapters_loaded`: what
    this server (with --replicas, the replica its `x-lmtune-replica` header names) holds in memory now."""
    body = {"status": "ok", "base": engine.base_name, "base_kind": engine.base_kind,
            "queue_depth": engine.queue_depth(), "adapters_loaded": engine.store.loaded_names()}
    if not engine.alive():
        failure = engine.failure or "the scheduler thread is not running"
        return Response(json.dumps({**body, "status": "dead", "error": failure}), status_code=503,
                        media_type="application/json")
    return body


@router.get("/metrics")
async def prometheus(engine: EngineDep, metrics: MetricsDep):
    body, content_type = metrics.render(engine)
    return Response(body, media_type=content_type)
