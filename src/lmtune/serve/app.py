"""The HTTP layer of `lmtune serve`: OpenAI-compatible routes over the mixed-adapter engine.

Conventions are vLLM's (shared/NOTES.md): the OpenAI `model` field names the adapter (or the base model, or is
left out for the base), `/v1/models` lists adapters with their parent, adapters load and unload at run time.
Errors always have OpenAI's shape (routes/errors.py). The routes live in `serve/routes/`, one router per concern,
and reach the engine through a typed dependency (routes/deps.py); this module only wires the middleware, the
app's state and the routers.

A request the engine refuses (bad input, full queue) is refused before it joins a batch, so it never disturbs the
other requests.
"""

from __future__ import annotations

from fastapi import FastAPI

from lmtune.serve.engine import Engine
from lmtune.serve.guard import ApiKeyMiddleware, BodyLimitMiddleware
from lmtune.serve.metrics import ServeMetrics
from lmtune.serve.routes import adapters, classify, completions, embeddings, health, models, playground, tokenize
from lmtune.serve.routes.errors import EXCEPTION_HANDLERS

DEFAULT_MAX_BODY_BYTES = 8 * 2**20

ROUTERS = (health.router, models.router, completions.router, classify.router, embeddings.router, adapters.router,
           tokenize.router, playground.router)


def create_app(engine: Engine, api_keys: list[str] | None = None, metrics: ServeMetrics | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving `engine` (already built; the caller starts and shuts it down).

    `api_keys`: when given (non-empty), every route but `/health`, `/metrics` (as in vLLM) and the playground page
    `/` needs `Authorization: Bearer <key>`, `/docs` and `/openapi.json` included; it is checked before the body
    is read.
    `metrics`: pass the `ServeMetrics` whose `observer` the engine was built with, so batch sizes are recorded; by
    default a fresh one is made and attached to the engine if it can be. `max_body_bytes`: larger bodies get 413.
    """
    keys = [k for k in (api_keys or []) if k]
    metrics = metrics or ServeMetrics()
    metrics.attach(engine)
    app = FastAPI(title="lmtune serve", version="1", docs_url="/docs", redoc_url=None,
                  exception_handlers=EXCEPTION_HANDLERS)
    app.state.engine, app.state.metrics = engine, metrics  # what routes/deps.py hands the handlers
    app.state.api_keys_required = bool(keys)  # the playground (GET /) asks for a key before its first call
    # The last added runs first: metrics count every answer, then the key, then the size, then FastAPI parses.
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=keys)
    app.add_middleware(metrics.middleware_class(), metrics=metrics)
    for router in ROUTERS:
        app.include_router(router)
    return app
