"""Command line: dispatch only. Every command's work lives in its module."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from lmtune.errors import LmtuneError

USAGE = """lmtune — fine-tune pretrained language models with any strategy

  lmtune train [CONFIG.yaml] [key.path=value ...]   train one run (e.g. method.rank=16 train.learning_rate=3e-4)
  lmtune eval RUN_DIR [--split test] [key=value ...] re-evaluate a finished run, print and save metrics
  lmtune eval RUN_DIR --task llm_adapters --datasets gsm8k,SVAMP,boolq [--max-samples N]
  lmtune eval --base smollm2 --task llm_adapters --datasets boolq   the untuned model (zero-shot reference)
  lmtune eval --base smollm2 --split test task.name=translation data.train=... data.test=...   likewise, any task
  lmtune predict RUN_DIR --text "..." | --file rows.jsonl   label + probabilities, generation or tags
  lmtune compare compare.yaml [key=value ...]        strategies and baselines side by side: leaderboard + report.html
  lmtune methods                                     every strategy with its options and defaults
  lmtune config [CONFIG.yaml] [key=value ...]        print the resolved config
  lmtune quickstart [key=value ...]                  the product-review example: three strategies side by side
  lmtune tune study.yaml [key=value ...]             hyper-parameter search: TPE/random/grid, DE, PBT, with k-fold CV
  lmtune serve --base smollm2 --adapters runs/       one frozen base model serving many adapters of any kind
  lmtune pretrain {tokenizer,model,continue} ...     train a tokenizer, pre-train from scratch, continue pre-training
"""

# Commands whose module owns its own arguments: `add_arguments(parser)` and `run(args)`. Imported only when used
# (or for --help), so `lmtune train` never pays for Ray or FastAPI.
PLUGIN_COMMANDS = {
    "tune": ("lmtune.tune.cli", "hyper-parameter search over dotted config keys (Optuna, Nevergrad DE, Ray PBT)"),
    "serve": ("lmtune.serve.cli", "serve many adapters of any kind on one frozen base model (OpenAI-compatible)"),
    "pretrain": ("lmtune.pretrain.cli", "train a tokenizer, pre-train a model from scratch, continue pre-training"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmtune", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "config"):
        cmd = sub.add_parser(name, help=f"{name} from a YAML config plus key.path=value overrides")
        cmd.add_argument("items", nargs="*", help="CONFIG.yaml (optional, first) and key.path=value overrides")
    ev = sub.add_parser("eval", help="re-evaluate a finished run, or evaluate on a suite of test sets")
    ev.add_argument("run_dir", nargs="?", help="a finished run directory (or give --base)")
    ev.add_argument("--split", default="validation", choices=["validation", "test"])
    ev.add_argument("--task", dest="suite", choices=["llm_adapters"], help="evaluate on a suite of test sets")
    ev.add_argument("--datasets", help="comma-separated sets of the suite, e.g. gsm8k,SVAMP,mawps,boolq,ARC-Easy")
    ev.add_argument("--max-samples", type=int, help="the first N rows of each set (quick runs, CPU)")
    ev.add_argument("--scoring", choices=["auto", "choices", "generate"], default="auto",
                    help="with --task: auto scores option sets (boolq, ARC-Easy) by each choice's log-likelihood "
                         "(lm-evaluation-harness) and math sets by generation; generate: the LLM-Adapters paper's way")
    ev.add_argument("--data-root", help="the suite's dataset folder (default: found under ../shared/data)")
    ev.add_argument("--base", help="evaluate this untuned model instead of a run (zero-shot reference)")
    ev.add_argument("--output", default="runs/zero-shot", help="with --base: where predictions and the summary go")
    ev.add_argument("overrides", nargs="*", help="e.g. data.test=other.jsonl task.generation.max_new_tokens=64")
    pr = sub.add_parser("predict", help="predict labels with a finished run")
    pr.add_argument("run_dir")
    group = pr.add_mutually_exclusive_group(required=True)
    group.add_argument("--text", action="append", help="a text to classify (repeatable)")
    group.add_argument("--file", help="a jsonl file of rows with the run's text column")
    pr.add_argument("--pair", action="append", help="second text of a pair, one per --text")
    cmp = sub.add_parser("compare", help="run strategies and baselines side by side; leaderboard and report.html")
    cmp.add_argument("items", nargs="*", help="compare.yaml and key.path=value overrides (base.train.epochs=1)")
    sub.add_parser("methods", help="list strategies and their options")
    qs = sub.add_parser("quickstart", help="sort product reviews with three strategies on MiniLM")
    qs.add_argument("--output", default="runs/quickstart", help="folder for the runs")
    qs.add_argument("overrides", nargs="*", help="applied to every run, e.g. model.name=smollm2 train.epochs=3")
    for name, (module, help_text) in PLUGIN_COMMANDS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_text))
    return parser


def _split_items(items: list[str]) -> tuple[str | None, list[str]]:
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, items


def _train(args) -> None:
    from lmtune.runconfig import load_config
    from lmtune.train import train

    path, overrides = _split_items(args.items)
    result = train(load_config(path, overrides))
    if result.metrics:
        _print_metrics(result.metrics)
        print(f"run directory: {result.run_dir}")
    # other ranks of a torchrun/accelerate launch have nothing to print: the main process evaluates and writes


def _config(args) -> None:
    import yaml

    from lmtune.errors import LmtuneError
    from lmtune.runconfig import load_config, resolve

    path, overrides = _split_items(args.items)
    cfg = load_config(path, overrides)
    try:
        cfg, unresolved = resolve(cfg), None  # what `lmtune train` would record
    except LmtuneError as err:  # e.g. no data yet: the label set is read from it
        unresolved = str(err)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    if unresolved:
        print(f"# defaults not filled in ({unresolved})")


def _eval(args) -> None:
    from lmtune.train.run_eval import evaluate_run, evaluate_run_on_suite, evaluate_untuned

    overrides = list(args.overrides)
    if args.run_dir and "=" in args.run_dir:  # `lmtune eval --base m key=value`: the first override lands here
        overrides.insert(0, args.run_dir)
        args.run_dir = None
    if bool(args.run_dir) == bool(args.base):
        raise LmtuneError("give a run directory or --base MODEL (not both)")
    if args.suite:
        if not args.datasets:
            raise LmtuneError(f"--task {args.suite} needs --datasets, e.g. --datasets gsm8k,SVAMP,boolq")
        names = [n.strip() for n in args.datasets.split(",") if n.strip()]
        print(evaluate_run_on_suite(args.run_dir, args.base, args.suite, names, args, overrides))
        return
    if args.base:
        metrics = evaluate_untuned(args.base, args.split, overrides, Path(args.output))
    else:
        metrics = evaluate_run(args.run_dir, args.split, overrides)
    _print_metrics(metrics)


def _predict(args) -> None:
    from lmtune.train.artifacts import load_run

    loaded = load_run(args.run_dir)
    if args.text:
        if args.pair and len(args.pair) != len(args.text):
            raise LmtuneError("give one --pair per --text")
        pairs = args.pair or [None] * len(args.text)
        rows = [loaded.task.row_from_text(text, pair) for text, pair in zip(args.text, pairs)]
    else:
        rows = _read_jsonl(Path(args.file))
    for row, prediction in zip(rows, loaded.task.predict(loaded.model, rows)):
        print(json.dumps({**row, **prediction}, ensure_ascii=False))


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise LmtuneError(f"input file {path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise LmtuneError(f"{path}:{number} is not valid JSON ({err.msg})") from None
    if not rows:
        raise LmtuneError(f"{path} has no rows")
    return rows


def _compare(args) -> None:
    from lmtune.compare.runner import load_compare_config, run_compare

    path, overrides = _split_items(args.items)
    run_compare(load_compare_config(path, overrides))


def _methods(args) -> None:
    from lmtune.methods.describe import describe_methods

    print(describe_methods())


def _quickstart(args) -> None:
    from lmtune.quickstart import run_quickstart

    run_quickstart(Path(args.output), args.overrides)


def _print_metrics(metrics: dict) -> None:
    shown = {k: v for k, v in metrics.items() if k not in ("splits", "confusion_matrix", "evaluations", "per_type")}
    width = max(len(k) for k in shown)
    for key, value in shown.items():
        print(f"  {key:<{width}}  {round(value, 4) if isinstance(value, float) else value}")
    if "confusion_matrix" in metrics:
        print(f"  {'confusion_matrix':<{width}}  {metrics['confusion_matrix']}")


COMMANDS = {
    "train": _train, "config": _config, "eval": _eval, "predict": _predict, "methods": _methods, "quickstart": _quickstart,
    "compare": _compare,
}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may follow options (`eval RUN --task x --datasets y task.a=1`): argparse leaves them over.
    target = "overrides" if hasattr(args, "overrides") else "items"
    if extra and all("=" in item and not item.startswith("-") for item in extra) and hasattr(args, target):
        setattr(args, target, [*getattr(args, target), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command in PLUGIN_COMMANDS:
            importlib.import_module(PLUGIN_COMMANDS[args.command][0]).run(args)
        else:
            COMMANDS[args.command](args)
    except LmtuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
