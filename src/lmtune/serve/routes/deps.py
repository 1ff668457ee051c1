"""What every handler may need: the engine and metrics of its app (typed `Depends`), and the adapter a request's
`model` names, with the 404 that lists the known ones."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lmtune.errors import did_you_mean
from lmtune.serve.engine import Engine
from lmtune.serve.metrics import ServeMetrics
from lmtune.serve.schemas import ApiError

SHOWN_ADAPTERS = 20
"""Adapters an unknown-model error lists at most (the rest: GET /v1/models)."""


# `async`: FastAPI runs plain functions in its thread pool, which a lookup does not need.
async def engine_of(request: Request) -> Engine:
    return request.app.state.engine


async def metrics_of(request: Request) -> ServeMetrics:
    return request.app.state.metrics


EngineDep = Annotated[Engine, Depends(engine_of)]
MetricsDep = Annotated[ServeMetrics, Depends(metrics_of)]


def resolve_adapter(engine: Engine, model: str | None, request: Request) -> str | None:
    """The adapter a request names (None: the base model); 404 naming the known ones when unknown. Notes the
    adapter in `request.state` for the metrics middleware's labels."""
    if model in (None, "", engine.base_name):
        request.state.adapter = "base"
        return None
    names = engine.adapter_names()
    if model in names:
        request.state.adapter = model
        return model
    raise unknown_model(engine, model, names)


def unknown_model(engine: Engine, model: str, names: list[str] | None = None) -> ApiError:
    names = engine.adapter_names() if names is None else names
    suggestion = did_you_mean(model, names + [engine.base_name])
    hint = f" {suggestion[0].upper()}{suggestion[1:]}" if suggestion else ""  # a sentence of its own here
    shown = sorted(names)[:SHOWN_ADAPTERS]
    more = f" and {len(names) - SHOWN_ADAPTERS} more (GET /v1/models)" if len(names) > SHOWN_ADAPTERS else ""
    known = ", ".join(shown) + more or "(no adapters loaded)"
    return ApiError(404, f"unknown model '{model}'.{hint} Known: base '{engine.base_name}'; adapters: {known}",
                    "not_found_error", "model_not_found", param="model")


def public_base(engine: Engine, base: str | None) -> str | None:
    """The base an adapter names, as clients may see it: the served base's name when it is that model (runs record
    the resolved cache folder), else only a path's last part, never a folder of this server."""
    if not base:
        return None
    path = str(engine.base_path)
    if base in (engine.base_name, path) or (path and base.rstrip("/").endswith(path.rstrip("/"))):
        return engine.base_name
    return base.rstrip("/").rsplit("/", 1)[-1] if base.startswith(("/", "~", ".")) else base
