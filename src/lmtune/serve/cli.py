"""`lmtune serve`: its arguments and its entry point. Keep imports here light; the work is imported in `run`."""

from __future__ import annotations

import argparse
import os
import sys

from lmtune.config.arguments import add_config_arguments, config_from_arguments
from lmtune.serve.config import EngineConfig, ReplicaOptions

API_KEYS_ENV = "LMTUNE_API_KEYS"
RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""0: a local Ray keeps every port on loopback (despite the name, on Linux too); read when ray is imported."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve one frozen base model and many adapters of any kind (LoRA, bottleneck, prompt/p-/prefix tuning, "
        "classification heads) through an OpenAI-compatible HTTP API: the request's `model` names the adapter."
    )
    parser.add_argument("--base", default="smollm2",
                        help="the base model: a bundled name (smollm2, minilm), a local folder or a hub name")
    parser.add_argument("--adapters", metavar="ROOT",
                        help="folder of finished runs; every adapter under it is served by its relative path, "
                             "and POST /v1/adapters loads more from under it")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                        help=f"require 'Authorization: Bearer KEY' on /v1 routes (repeatable; also ${API_KEYS_ENV}, "
                             "comma-separated)")
    parser.add_argument("--max-body-mb", type=float, default=8,
                        help="largest request body in MB; larger ones are answered 413 before they are read in full")
    # Every engine setting (batch size, queue, memory budget, device, dtype, ...), from EngineConfig's own fields.
    add_config_arguments(parser.add_argument_group("engine (EngineConfig)"), EngineConfig)
    # --replicas N and how each replica is sized, from ReplicaOptions (serve/cluster.py runs them on Ray Serve).
    add_config_arguments(parser.add_argument_group("replicas (ReplicaOptions; N > 1 needs the cluster extra)"),
                         ReplicaOptions)
    parser.add_argument("--threads", type=int, help="torch CPU threads, per replica (default: torch's; with "
                                                    "--replicas, --cpus-per-replica)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def api_keys(args: argparse.Namespace) -> list[str]:
    """Keys from --api-key and $LMTUNE_API_KEYS together."""
    from_env = [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    return list(dict.fromkeys([*(k.strip() for k in args.api_key if k.strip()), *from_env]))


def run(args: argparse.Namespace) -> None:
    import uvicorn

    from lmtune.errors import LmtuneError
    from lmtune.serve.app import create_app
    from lmtune.serve.engine import Engine
    from lmtune.serve.metrics import ServeMetrics

    keys = api_keys(args)
    if not keys and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host} without an API key: anyone who can reach it can use it and load "
              f"adapters (give --api-key or ${API_KEYS_ENV})", file=sys.stderr)
    metrics = ServeMetrics()
    if args.max_body_mb <= 0:
        raise LmtuneError("--max-body-mb must be positive")
    cfg = config_from_arguments(args, EngineConfig)
    scale = config_from_arguments(args, ReplicaOptions)
    if scale.replicas > 1:
        serve_replicas(args, keys, cfg, scale)
        return
    engine = Engine(args.base, args.adapters, cfg, observer=metrics.observer, num_threads=args.threads)
    app = create_app(engine, keys, metrics=metrics, max_body_bytes=int(args.max_body_mb * 2**20))
    engine.start()
    names = engine.adapter_names()
    print(f"lmtune serve: base {engine.base_name} ({engine.base_kind}, {engine.model.dtype} on {engine.model.device}), "
          f"{len(names)} adapter(s)"
          f"{': ' + ', '.join(names[:10]) if names else ''}{' …' if len(names) > 10 else ''}; "
          f"http://{args.host}:{args.port}/v1  (auth {'on' if keys else 'off'})", file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    finally:
        engine.shutdown()


def serve_replicas(args: argparse.Namespace, keys: list[str], cfg: EngineConfig, scale: ReplicaOptions) -> None:
    """`--replicas N`: a local Ray, N engines behind Ray's proxy on --host/--port, until Ctrl-C or SIGTERM."""
    import signal
    import threading

    from lmtune.errors import LmtuneError
    from lmtune.serve.config import ClusterConfig

    os.environ.setdefault(RAY_LOOPBACK_ENV, "0")  # before ray is imported (serve/cluster.py imports it)
    try:
        from lmtune.serve import cluster
    except ImportError as err:
        raise LmtuneError(f"--replicas needs Ray Serve ({err}): pip install 'lmtune[cluster]'") from None
    config = ClusterConfig(**scale.model_dump(), base=args.base, adapters=args.adapters, engine=cfg,
                           threads=args.threads, api_keys=keys, max_body_mb=args.max_body_mb)
    cluster.start_local(config, args.host, args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that Ray is shut down below, not left running
    print(f"lmtune serve: base {args.base}, {scale.replicas} replicas on Ray Serve; http://{args.host}:{args.port}/v1"
          f"  (auth {'on' if keys else 'off'}; Ctrl-C stops; logs under /tmp/ray/session_latest/logs/serve)",
          file=sys.stderr)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop_local()
