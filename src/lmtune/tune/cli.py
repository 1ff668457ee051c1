"""`lmtune tune`: its arguments and its entry point. Keep imports here light; the work is imported in `run`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("items", nargs="*", help="study.yaml and key.path=value overrides (budget.trials=8, "
                                                 "algorithm=de, base.train.epochs=1)")
    parser.add_argument("--worker", action="store_true",
                        help="join the study's Optuna storage as one more worker (tpe/random/grid); "
                             "start as many as you like, on any machine that reaches the storage")
    parser.add_argument("--storage", help="Optuna storage URL shared by the workers (sqlite:///study.db, "
                                          "postgresql://user@host/db); the same as storage: in the study file")
    parser.add_argument("--workers", type=int, help="trials at once on this machine (overrides workers:)")
    parser.add_argument("--summary", action="store_true",
                        help="write trials.csv, best_config.yaml and report.html from what has run; run nothing")


def run(args: argparse.Namespace) -> None:
    from lmtune.errors import LmtuneError
    from lmtune.tune.study import load_study_config, run_study, summarize_study

    items = list(args.items)
    path = items.pop(0) if items and "=" not in items[0] else None
    if path is None:
        raise LmtuneError("give a study file: lmtune tune study.yaml [key=value ...] (see docs/tune.md)")
    if args.storage:
        items.append(f"storage={args.storage}")
    if args.workers:
        items.append(f"workers={args.workers}")
    cfg = load_study_config(path, items)
    if args.summary:
        summarize_study(cfg)
    else:
        run_study(cfg, worker_only=args.worker)
