"""Prometheus metrics for `lmtune serve`: one `CollectorRegistry` per app, so apps (and tests) never share counters.

Served at `/metrics` in Prometheus' text format. Names (all prefixed `lmtune_`):

- `requests_total{route, status, adapter}`: HTTP requests answered (adapter: its name, `base`, or `none`)
- `requests_in_flight`: HTTP requests being answered now (streams included)
- `prompt_tokens_total{adapter}`, `generation_tokens_total{adapter}`: tokens read and written
- `request_latency_seconds{route}`: from the request's arrival to its last byte (streams included)
- `time_to_first_token_seconds{route}`: from arrival to the first generated text
- `batch_size`: rows in each engine step; `engine_steps_total`, `engine_new_tokens_total`, `prefill_rows_total`
- `queue_depth`: requests waiting for a batch slot
- `adapters_registered`: adapters the store knows
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from lmtune.serve.engine import Engine, EngineObserver

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Observer(EngineObserver):
    """Called from the engine's thread; prometheus_client's metrics are thread-safe."""

    def __init__(self, metrics: ServeMetrics):
        self.metrics = metrics

    def on_step(self, batch_size: int, new_tokens: int, prefill_rows: int) -> None:
        m = self.metrics
        m.batch_size.observe(batch_size)
        m.engine_steps.inc()
        m.engine_new_tokens.inc(max(0, new_tokens))
        m.prefill_rows.inc(max(0, prefill_rows))

    def on_queue(self, depth: int) -> None:
        self.metrics.queue_depth.set(depth)


class ServeMetrics:
    """Every metric of one server, in its own registry. Build the engine with `observer=metrics.observer`."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("lmtune_requests", "HTTP requests answered", ["route", "status", "adapter"],
                                registry=r)
        self.in_flight = Gauge("lmtune_requests_in_flight", "HTTP requests being answered now", registry=r)
        self.prompt_tokens = Counter("lmtune_prompt_tokens", "prompt tokens of finished generations", ["adapter"],
                                     registry=r)
        self.generation_tokens = Counter("lmtune_generation_tokens", "tokens generated", ["adapter"], registry=r)
        self.latency = Histogram("lmtune_request_latency_seconds", "request arrival to last byte", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("lmtune_time_to_first_token_seconds", "request arrival to first generated text",
                              ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("lmtune_batch_size", "rows in each engine step", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.engine_steps = Counter("lmtune_engine_steps", "engine steps (prefill or decode)", registry=r)
        self.engine_new_tokens = Counter("lmtune_engine_new_tokens", "tokens produced by engine steps", registry=r)
        self.prefill_rows = Counter("lmtune_prefill_rows", "rows prefilled", registry=r)
        self.queue_depth = Gauge("lmtune_queue_depth", "requests waiting for a batch slot", registry=r)
        self.adapters = Gauge("lmtune_adapters_registered", "adapters the store knows", registry=r)
        self.observer = _Observer(self)

    def attach(self, engine: Engine) -> None:
        """Hand the observer to an engine built without one (its no-op `EngineObserver`)."""
        if type(engine.observer) is EngineObserver:
            engine.observer = self.observer

    # called by the app
    def tokens(self, adapter: str, prompt: int, completion: int) -> None:
        self.prompt_tokens.labels(adapter or "base").inc(max(0, prompt or 0))
        self.generation_tokens.labels(adapter or "base").inc(max(0, completion or 0))

    def first_token(self, route: str, seconds: float) -> None:
        self.ttft.labels(route).observe(seconds)

    def stream_done(self, route: str, seconds: float) -> None:
        self.latency.labels(route).observe(seconds)

    def render(self, engine=None) -> tuple[bytes, str]:
        if engine is not None:
            try:
                self.queue_depth.set(engine.queue_depth())
                self.adapters.set(len(engine.store.list()))
            except Exception:  # noqa: BLE001, S110 - a scrape never fails because the engine is busy or stopping
                pass
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def middleware_class(self):
        return MetricsMiddleware


class MetricsMiddleware:
    """Pure ASGI middleware: counts every answer by route template, status and adapter, and times non-streaming
    ones (streams are timed to their last byte by the app). Pure ASGI, so streams pass through untouched."""

    def __init__(self, app, metrics: ServeMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500
        state = scope.setdefault("state", {})  # the handlers' `request.state` writes here

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            adapter = state.get("adapter") or "none"
            self.metrics.requests.labels(route, str(status), adapter).inc()
            if not state.get("streaming"):
                self.metrics.latency.labels(route).observe(time.perf_counter() - started)
