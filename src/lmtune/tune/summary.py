"""The end of a study: trials.csv (one row per trial), summary.json, best_config.yaml (the best trial's config,
ready for `lmtune train`), report.html, and the table printed in the terminal."""

from __future__ import annotations

import csv
import io
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lmtune.io import write_json, write_text, write_yaml
from lmtune.tune.space import show
from lmtune.tune.trial import TrialRecord

if TYPE_CHECKING:
    from lmtune.tune.study import Study


@dataclass
class StudyResult:
    folder: Path
    records: list[TrialRecord]
    best: TrialRecord | None
    reference: TrialRecord | None
    summary: dict[str, Any]


def best_record(study: Study, records: list[TrialRecord]) -> TrialRecord | None:
    best = None
    for record in records:
        if record.state == "complete" and study.better(record.score, best.score if best else None):
            best = record
    return best


def write_summary(study: Study, records: list[TrialRecord], reference: TrialRecord | None, seconds: float) -> StudyResult:
    from lmtune.tune.report import write_report

    folder = study.folder
    best = best_record(study, records)
    write_text(folder / "trials.csv", trials_csv(study, records))
    best_config = _write_best_config(study, best)
    counts = {state: sum(r.state == state for r in records) for state in ("complete", "failed", "running", "killed")}
    summary = {
        "algorithm": study.cfg.algorithm,
        "objective": study.cfg.objective.model_dump(),
        "cv_folds": study.cfg.cv.folds if study.cfg.cv else None,
        "trials": counts,
        "failures": failures_by_error(records),
        "best": _brief(best),
        "best_config": str(best_config) if best_config else None,
        "reference": _brief(reference),
        "space": [p.describe() for p in study.params],
        "wall_seconds_this_invocation": round(seconds, 1),
        "trial_seconds_total": round(sum(r.seconds or 0 for r in records), 1),
        "workers": study.cfg.workers,
        "threads_per_trial": study.base["train"]["num_threads"],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(folder / "summary.json", summary)
    report = write_report(study, records, best, reference, folder / "report.html")
    print("\n" + terminal_table(study, records, best))
    failures = failures_by_error(records)
    if failures:
        print(f"{sum(failures.values())} of {len(records)} trials failed:")
        for error, count in failures.items():
            print(f"  {count} x {error}")
    if reference is not None and reference.score is not None:
        print(f"reference (base config): {reference.score:.4f}")
    if best is not None:
        print(f"best: trial {best.number}, {study.cfg.objective.metric} {best.score:.4f}; config: {best_config}")
    print(f"report: {report}")
    return StudyResult(folder, records, best, reference, summary)


def failures_by_error(records: list[TrialRecord]) -> dict[str, int]:
    """Failed trials counted by their error's first line, the most frequent first."""
    counts = Counter(((r.error or "").strip().splitlines() or ["no error recorded"])[0]
                     for r in records if r.state == "failed")
    return dict(counts.most_common())


def _brief(record: TrialRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"number": record.number, "score": record.score, "score_std": record.score_std,
            "fold_scores": record.fold_scores, "params": record.params, "dir": record.dir, "state": record.state}


def _write_best_config(study: Study, best: TrialRecord | None) -> Path | None:
    if best is None or not best.dir:
        return None
    source = Path(best.extra.get("config") or Path(best.dir) / "config.yaml")
    source = source if source.is_absolute() else study.folder / source
    if not source.is_file():
        return None
    config = yaml.safe_load(source.read_text())
    config["output"] = {**config.get("output", {}), "dir": str(study.folder), "name": "best"}
    return write_yaml(study.folder / "best_config.yaml", config)


def trials_csv(study: Study, records: list[TrialRecord]) -> str:
    keys = study.keys
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["number", "state", "score", "score_std", "fold_scores", *keys, "seconds", "dir", "worker", "error"])
    for r in records:
        writer.writerow([r.number, r.state, r.score, r.score_std, " ".join(f"{s:.4f}" for s in r.fold_scores),
                         *[r.params.get(k) for k in keys], r.seconds, r.dir, r.worker, r.error or ""])
    return buffer.getvalue()


def terminal_table(study: Study, records: list[TrialRecord], best: TrialRecord | None, limit: int = 15) -> str:
    """The best trials first (at most `limit`), then the failed ones."""
    done = sorted([r for r in records if r.state == "complete"], key=lambda r: r.score,
                  reverse=study.cfg.greater_is_better)
    rows = [[str(r.number), f"{r.score:.4f}" + (f" ± {r.score_std:.4f}" if r.score_std is not None else ""),
             *[show(r.params.get(k)) for k in study.keys], f"{r.seconds or 0:.0f}"] for r in done[:limit]]
    rows += [[str(r.number), r.state, *[show(r.params.get(k)) for k in study.keys], f"{r.seconds or 0:.0f}"]
             for r in records if r.state != "complete"]
    header = ["trial", study.cfg.objective.metric, *study.keys, "s"]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = lambda row: "  ".join(cell.ljust(width) for cell, width in zip(row, widths))
    more = f"\n({len(done) - limit} more complete trials in trials.csv)" if len(done) > limit else ""
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)]) + more
