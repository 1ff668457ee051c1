"""`lmtune serve --replicas N`, and the same application for `serve run` on a Ray cluster: N engines as Ray Serve
replicas behind Ray's HTTP proxy, each adapter routed to the replicas that already hold it.

Two deployments. `EngineReplica` is one engine with the single server's own FastAPI app (serve/app.py, the same
routes); it "loads" adapters through `@serve.multiplexed`, which is how a replica tells Ray's router which adapters
it holds. `Router`, the HTTP ingress, checks the API key and the body's size before reading it, reads the adapter
from the body's `model` and calls a replica through `handle.options(multiplexed_model_id=...)` (serve/forward.py
says why a router and not the proxy's header). Requests for the base model, or for names no replica knows, are
load-balanced rather than pinned (as Ray Serve's OpenAI ingress does): every replica holds the base.

Only `lmtune serve --replicas N` (N > 1) and `serve run` import this module; the single server needs no Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time

from ray import serve
from ray.serve.handle import DeploymentHandle

from lmtune.device import names_gpu
from lmtune.errors import LmtuneError
from lmtune.serve.config import ClusterConfig
from lmtune.serve.forward import ForwardedRequest, adapter_named, read_body, run_app
from lmtune.serve.guard import ApiKeyMiddleware, BodyLimitMiddleware, answer

REPLICA_HEADER = "x-lmtune-replica"
"""Names the replica that answered, on every response that came through the router."""
CATALOG_SECONDS = 10.0
"""How long the router trusts its list of adapter names before asking a replica again (which rescans the root)."""
RUNTIME_LOADING = ("/v1/adapters", "/v1/load_lora_adapter", "/v1/unload_lora_adapter")


@serve.deployment(name="engine")
class EngineReplica:
    def __init__(self, cfg: ClusterConfig):
        from lmtune.serve.app import create_app
        from lmtune.serve.engine import Engine
        from lmtune.serve.metrics import ServeMetrics

        metrics = ServeMetrics()
        self.engine = Engine(cfg.base, cfg.adapters, cfg.engine, observer=metrics.observer, num_threads=cfg.threads)
        # Keys are the router's to check: a replica is reached through Ray's handles only, never over HTTP.
        self.app = create_app(self.engine, None, metrics=metrics, max_body_bytes=int(cfg.max_body_mb * 2**20))
        self.name = serve.get_replica_context().replica_id.unique_id
        self.engine.start()

        async def hold(name: str) -> str:
            await asyncio.to_thread(self.engine.store.get, name)  # read now, off the event loop
            return name

        # A plain function (serve.multiplexed keeps its cache on the object it wraps). Ray's count limit only
        # decides what the router remembers; the engine evicts by --memory-budget-mb and reloads on next use.
        self.hold = serve.multiplexed(max_num_models_per_replica=cfg.adapters_per_replica)(hold)

    def check_health(self) -> None:
        """Ray calls this every few seconds: a replica whose scheduler thread has died is replaced."""
        if not self.engine.alive():
            raise RuntimeError(self.engine.failure or "the engine's scheduler thread is not running")

    async def catalog(self) -> dict:
        """The base's name and every adapter under the root, rescanned (a run added since start is found)."""
        if self.engine.store.root is not None:
            await asyncio.to_thread(self.engine.store.scan)
        return {"base": self.engine.base_name, "adapters": self.engine.adapter_names()}

    async def http(self, request: ForwardedRequest):
        """Answer one forwarded request with the app, yielding its ASGI messages (the response start names this
        replica). Holding the adapter first is what makes Ray route its next requests here."""
        name = serve.get_multiplexed_model_id()
        if name:
            if name not in self.engine.adapter_names():
                await asyncio.to_thread(self.engine.store.scan)  # the router saw it on another replica's scan
            with contextlib.suppress(LmtuneError):  # a broken adapter: the app answers its own 400 below
                await self.hold(name)
        async for message in run_app(self.app, request):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (REPLICA_HEADER.encode(), self.name.encode())]}
            yield message

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


class RouterApp:
    """The router's ASGI app, inside the API-key and body-size middleware of the single server (serve/guard.py)."""

    def __init__(self, engines: DeploymentHandle):
        self.engines = engines
        self.streams = engines.options(stream=True)
        self.known: dict = {"base": None, "adapters": frozenset()}
        self.known_at = -CATALOG_SECONDS
        self.lock = asyncio.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"].startswith(RUNTIME_LOADING):
            await answer(send, 501, "adapters cannot be loaded or unloaded at run time with --replicas (each "
                          "replica has its own store): put the run under the adapter root instead; every replica "
                          "finds it by its path there", "invalid_request_error", "not_with_replicas")
        elif scope["type"] == "http":
            request = ForwardedRequest.of(scope, await read_body(receive))
            await self.forward(request, await self.pinned(adapter_named(request)), send)

    async def pinned(self, model: str | None) -> str | None:
        """The multiplexed id for `model`: an adapter some replica knows; None for the base and unknown names (a
        name no replica will hold would make Ray's router wait for one)."""
        if model is None:
            return None
        async with self.lock:
            stale = time.monotonic() - self.known_at > CATALOG_SECONDS
            if model not in self.known["adapters"] and model != self.known["base"] and stale:
                catalog = await self.engines.catalog.remote()
                self.known = {"base": catalog["base"], "adapters": frozenset(catalog["adapters"])}
                self.known_at = time.monotonic()
        return model if model in self.known["adapters"] else None

    async def forward(self, request: ForwardedRequest, adapter: str | None, send) -> None:
        handle = self.streams.options(multiplexed_model_id=adapter) if adapter else self.streams
        messages = handle.http.remote(request)
        started = finished = False
        try:
            async for message in messages:
                started = started or message["type"] == "http.response.start"
                await send(message)
            finished = True
        except Exception as err:  # noqa: BLE001 - a replica that died or could not be reached
            if started:
                raise
            await answer(send, 503, f"no engine replica could answer ({type(err).__name__}: {err})",
                          "server_error", "replica_unavailable")
        finally:
            if not finished:
                messages.cancel()  # the client went away: the replica's app hears the disconnect


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


@serve.deployment(name="router", ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Router:
    def __init__(self, engines: DeploymentHandle, api_keys: list[str], max_body_bytes: int):
        from_env = [k.strip() for k in os.environ.get("LMTUNE_API_KEYS", "").split(",") if k.strip()]
        app = BodyLimitMiddleware(RouterApp(engines), max_bytes=max_body_bytes)
        self._app = ApiKeyMiddleware(app, keys=[*api_keys, *from_env])

    def __serve_build_asgi_app__(self):
        return self._app


def build(cfg: ClusterConfig) -> serve.Application:
    """The application: `cfg.replicas` engines and one router in front."""
    if names_gpu(cfg.engine.device) and cfg.gpus_per_replica == 0:
        raise LmtuneError(f"device {cfg.engine.device} on replicas needs GPUs reserved for them (--gpus-per-replica, "
                          "e.g. 1 or 0.5): Ray shows a replica only the GPUs it reserves")
    queue = cfg.engine.max_queue + cfg.engine.max_batch_size  # the engine's own 429 comes before Ray's queue
    # Ray's replicas sleep this long before checking for requests still running when they stop (2 s by default)
    drain = {"graceful_shutdown_wait_loop_s": 0.5}
    engines = EngineReplica.options(
        num_replicas=cfg.replicas, max_ongoing_requests=queue, **drain,
        ray_actor_options={"num_cpus": cfg.cpus_per_replica, "num_gpus": cfg.gpus_per_replica},
    ).bind(cfg)
    return Router.options(max_ongoing_requests=queue * cfg.replicas, **drain).bind(
        engines, cfg.api_keys, int(cfg.max_body_mb * 2**20))


def app_builder(args: dict) -> serve.Application:
    """For `serve run lmtune.serve.cluster:app_builder` and a Serve config file's `import_path` (docs/serve.md):
    Ray passes the config's `args` as a dict (it would validate a pydantic annotation itself, but reads it only
    unevaluated, and this module's annotations are strings)."""
    return build(ClusterConfig.model_validate(args))


def start_local(cfg: ClusterConfig, host: str, port: int) -> None:
    """A Ray of this process's own (no dashboard) serving `build(cfg)` on host:port through Ray's proxy;
    `stop_local()` ends it. Failures are LmtuneErrors that say what did not start. Ray's own ports stay on
    loopback only where $RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set before ray was imported (`lmtune serve` sets
    it, tests/conftest.py too); otherwise Ray resolves 127.0.0.1 to the machine's address and listens there."""
    import ray

    _check_paths(cfg)
    cpus = max(os.cpu_count() or 1, math.ceil(cfg.replicas * cfg.cpus_per_replica))
    try:
        # address="local": a new Ray even where $RAY_ADDRESS names a cluster (that is `serve run`'s business).
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")
    except Exception as err:  # noqa: BLE001 - Ray's own errors are many and untyped
        raise LmtuneError(f"--replicas {cfg.replicas} needs a local Ray, which did not start ({type(err).__name__}: "
                          f"{err}); serve without --replicas (no Ray), or see Ray's logs under /tmp/ray") from None
    try:
        serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
        serve.run(build(cfg), name="lmtune", route_prefix="/")
    except Exception as err:  # noqa: BLE001 - a replica that failed to start, a port taken
        why = _deployment_errors() or f"{type(err).__name__}: {err}"
        stop_local()
        raise LmtuneError(f"the {cfg.replicas} replicas did not start: {why}") from None


def _check_paths(cfg: ClusterConfig) -> None:
    """Here, not in N replicas after Ray's retries: a wrong base or root fails at once, and a bundled GGUF base is
    converted once into the cache (not by every replica at the same time)."""
    from pathlib import Path

    from lmtune.config.schema import ModelConfig
    from lmtune.models.loading import resolve_model_path

    resolve_model_path(ModelConfig(name=cfg.base))
    if cfg.adapters and not Path(cfg.adapters).is_dir():
        raise LmtuneError(f"adapter root {cfg.adapters} is not a folder")


def _deployment_errors() -> str:
    """The last line of each failed deployment's message (its constructor's exception), from `serve.status()`."""
    with contextlib.suppress(Exception):  # Serve itself may be what failed
        lines = [d.message.strip().splitlines()[-1] for app in serve.status().applications.values()
                 for d in app.deployments.values() if d.message.strip()]
        return "; ".join(lines)
    return ""


def stop_local() -> None:
    import ray

    with contextlib.suppress(Exception):  # Serve may not have started
        serve.shutdown()
    ray.shutdown()
