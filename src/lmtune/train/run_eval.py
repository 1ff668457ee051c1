"""`lmtune eval RUN`: re-evaluate a finished run on its splits (or a new file) and record the result."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lmtune.errors import LmtuneError
from lmtune.evaluate.predictions import take_predictions
from lmtune.io import write_json
from lmtune.train import rundir
from lmtune.train.artifacts import load_run


def evaluate_run(run_dir: str | Path, split: str = "validation", overrides: list[str] | None = None) -> dict[str, Any]:
    loaded = load_run(run_dir, overrides)
    metrics = _evaluate_loaded(loaded, split, Path(run_dir))
    record(Path(run_dir), split, metrics, getattr(loaded.config.data, split) or "held out from data.train")
    return metrics


def evaluate_untuned(base: str, split: str, overrides: list[str], out_dir: Path) -> dict[str, Any]:
    """The untuned base model on a generative task's split (e.g. translation before tuning); the task and data
    come from the overrides (`task.name=translation data.test=...`)."""
    from lmtune.train.benchmark_sets import untuned

    loaded = untuned(base, overrides, task_name="instruction")
    metrics = _evaluate_loaded(loaded, split, out_dir)
    write_json(out_dir / f"metrics-{split}.json", {"model": base, "split": split, **metrics})
    return metrics


def _evaluate_loaded(loaded, split: str, out_dir: Path) -> dict[str, Any]:
    task, cfg = loaded.task, loaded.config
    table = getattr(task.load_data(), split, None)
    if table is None:
        raise LmtuneError(f"there is no {split} split; give one with data.{split}=<file>")
    metrics = task.evaluate(loaded.model, table, cfg.eval.batch_size)
    take_predictions(metrics, out_dir, f"eval-{split}")
    return metrics


def record(run_dir: Path, split: str, metrics: dict[str, Any], source: str) -> None:
    """Keep re-evaluations beside the training-time numbers, under `evaluations`."""
    path = run_dir / rundir.METRICS_FILE
    data = json.loads(path.read_text())
    data.setdefault("evaluations", []).append(
        {"split": split, "source": source, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **metrics}
    )
    write_json(path, data)


def evaluate_run_on_suite(run_dir: str | None, base: str | None, suite: str, names: list[str], options,
                          overrides: list[str]) -> str:
    """A run (or an untuned base model) on several test sets of a suite; returns the table to print."""
    from lmtune.train.benchmark_sets import evaluate_suite, record_suite, suite_root, suite_sets, suite_table, untuned

    sets = suite_sets(suite_root(suite, options.data_root), names)  # before a model loads: typos fail in seconds
    loaded = untuned(base, overrides) if base else load_run(run_dir, overrides)
    out_dir = Path(options.output) if base else Path(run_dir)
    results = evaluate_suite(loaded, suite, sets, options.max_samples, out_dir, options.scoring)
    summary = record_suite(out_dir, suite, results, loaded.config.model.name)
    if not base:
        for name, metrics in results.items():
            record(out_dir, f"{suite}/{name}", metrics, metrics["source"])
    return f"{suite_table(results)}\nper-set metrics: {summary}"
