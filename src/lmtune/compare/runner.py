"""`lmtune compare`: run every entry one after another (finished entries are not re-run), then write the
leaderboard (terminal, CSV, JSON) and a self-contained report.html."""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from tqdm.auto import tqdm

from lmtune.compare.config import CompareConfig, Entry, expand
from lmtune.config.loading import apply_overrides, explain, read_yaml
from lmtune.config.paths import resolve_paths
from lmtune.errors import LmtuneError
from lmtune.io import write_yaml
from lmtune.results import read_metrics
from lmtune.runconfig import resolve_config, with_absolute_paths
from lmtune.train import rundir

# The run facts every entry row carries beside its scores (a failed entry has None for each).
RUN_FACT_COLUMNS = ("trainable_params", "total_params", "trainable_percent", "artifact_bytes", "train_seconds", "peak_rss_mb")


@dataclass
class CompareResult:
    folder: Path
    entries: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    report: Path


def load_compare_config(path: str | Path | None, overrides: list[str]) -> CompareConfig:
    """YAML plus overrides; `base.train.epochs=1` reaches into the base run config."""
    raw = apply_overrides(read_yaml(path) if path else {}, overrides)
    try:
        cfg = CompareConfig.model_validate(raw)
    except ValidationError as err:
        raise LmtuneError(explain(err, raw, CompareConfig).replace("invalid config", "invalid compare config")) from None
    cfg = cfg.updated({"base": with_absolute_paths(cfg.base, Path.cwd())})  # a bad base config fails before anything runs
    return resolve_paths(cfg)


def run_compare(cfg: CompareConfig) -> CompareResult:
    from lmtune.compare.leaderboard import leaderboard_rows, terminal_table, write_leaderboard
    from lmtune.compare.report import write_report
    from lmtune.tasks import TASKS

    try:
        entries = expand(cfg)
    except ValueError as err:
        raise LmtuneError(str(err)) from None
    folder = Path(cfg.output.dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_yaml(folder / "compare.yaml", cfg.model_dump(mode="json"))
    task = TASKS.get(resolve_config(dict(cfg.base)).task.name)  # its headline metric ranks the entries
    results = []
    overall = tqdm(entries, desc="compare", unit="entry", position=0, disable=None)  # None: no bar off a terminal
    for number, entry in enumerate(overall, 1):
        overall.set_postfix_str(entry.name)
        print(f"\n=== [{number}/{len(entries)}] {entry.name}", flush=True)
        results.append(run_entry(cfg, entry, folder / entry.slug))
    overall.close()
    rows = leaderboard_rows(results, task.headline_metric, task.headline_greater_is_better)
    write_leaderboard(rows, folder)
    title = cfg.output.title or _title(cfg)
    report = write_report(folder / "report.html", title, results, rows, task.headline_metric,
                          task.headline_greater_is_better, subtitle=_subtitle())
    print("\n" + terminal_table(rows, task.headline_metric))
    print(f"\nreport: {report.resolve()}")
    return CompareResult(folder, results, rows, report)


def run_entry(cfg: CompareConfig, entry: Entry, out: Path) -> dict[str, Any]:
    """Run one entry unless it finished before; a failure is recorded, and the comparison goes on."""
    if not rundir.is_finished(out):
        try:
            _run(cfg, entry, out)
        except Exception as err:  # noqa: BLE001 - one broken entry must not cost the others
            message = str(err) if isinstance(err, LmtuneError) else f"{type(err).__name__}: {err}"
            print(f"{entry.name} failed: {message}")
            if not isinstance(err, LmtuneError):
                traceback.print_exc()
            return _failed(entry, out, message)
    else:
        print(f"{entry.name}: finished before, not re-run ({out})")
    return entry_result(entry, out)


def _run(cfg: CompareConfig, entry: Entry, out: Path) -> None:
    placement = [f"output.dir={out.parent}", f"output.name={out.name}"]
    if entry.kind == "strategy":
        from lmtune.train import train

        resume = ["train.resume=true"] if out.is_dir() and any(out.iterdir()) else []  # a killed entry continues
        run_cfg = resolve_config(dict(cfg.base), [*entry.overrides, *placement, *resume])
        if cfg.launch.processes == 1:
            train(run_cfg)
            return
        from lmtune.train.launch import train_launched

        config = out.parent / f"{out.name}.config.yaml"  # beside the run: its folder belongs to the launched run
        write_yaml(config, run_cfg.model_dump(mode="json"))
        train_launched(cfg.launch, config, out, out.parent / f"{out.name}.log")
        return
    from lmtune.baselines import BASELINES

    baseline = BASELINES.build(entry.baseline["name"], BASELINES.config_class(entry.baseline["name"]).model_validate(entry.baseline))
    baseline.run(resolve_config(dict(cfg.base), placement), out)


def entry_result(entry: Entry, out: Path) -> dict[str, Any]:
    """A finished entry's row material, read through the typed metrics.json: the headline split's scores (counts
    such as rows stay out), the run facts, the confusion matrix and the labels for the report."""
    metrics = read_metrics(out)
    config = yaml.safe_load((out / rundir.CONFIG_FILE).read_text()) if (out / rundir.CONFIG_FILE).is_file() else {}
    return {
        "name": entry.name, "kind": entry.kind, "method": metrics.method, "status": "done",
        "error": None, "metrics": metrics.headline.scores(), "run_dir": str(out), "log": _log(out),
        **{k: getattr(metrics, k) for k in RUN_FACT_COLUMNS},
        "confusion_matrix": metrics.headline.confusion_matrix,
        "labels": (config.get("data") or {}).get("labels"),
    }


def _failed(entry: Entry, out: Path, message: str) -> dict[str, Any]:
    empty = dict.fromkeys((*RUN_FACT_COLUMNS, "confusion_matrix", "labels"))
    return {"name": entry.name, "kind": entry.kind, "method": entry.name, "status": "failed", "error": message,
            "metrics": {}, "run_dir": str(out), "log": [], **empty}


def _log(out: Path) -> list[dict[str, Any]]:
    path = out / rundir.LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _title(cfg: CompareConfig) -> str:
    base = resolve_config(dict(cfg.base))
    data = Path(base.data.train).name if base.data.train else base.data.hub
    return f"{base.task.name}: {base.model.name} on {data}"


def _subtitle() -> str:
    import os
    import platform

    return f"{time.strftime('%Y-%m-%d %H:%M')} · {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
