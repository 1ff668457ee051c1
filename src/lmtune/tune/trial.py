"""One trial: parameters → overrides → a resolved config file in the study folder → `train()` → a score.

Layout of a trial folder (every config.yaml re-runs alone with `lmtune train <it> output.name=rerun`):

    trials/0007/config.yaml        the base config with this trial's overrides (the one to retrain on all data)
    trials/0007/run/               its run directory (metrics.json marks it finished)
    trials/0007/fold-0/config.yaml with `cv`: the same overrides on fold 0's train/validation rows
    trials/0007/fold-0/run/
    trials/0007/trial.json         params, overrides, score (mean over folds), spread, state, seconds
    trials/0007/train.log          what training printed
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import socket
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lmtune.config.schema import LaunchConfig
from lmtune.errors import LmtuneError, hint
from lmtune.io import write_json, write_yaml
from lmtune.runconfig import RunConfig, resolve_config
from lmtune.tune.space import format_value, to_overrides

if TYPE_CHECKING:
    from lmtune.tune.study import Study

TRIAL_FILE = "trial.json"
RUN_NAME = "run"


@dataclass
class TrialRecord:
    number: int
    state: str
    """complete | failed | running | killed (a killed trial is retried in the same folder)."""
    params: dict[str, Any]
    score: float | None = None
    score_std: float | None = None
    fold_scores: list[float] = field(default_factory=list)
    seconds: float | None = None
    dir: str | None = None
    """The trial folder, relative to the study folder."""
    error: str | None = None
    worker: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialRecord:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class ObjectiveError(LmtuneError):
    """The objective cannot be read from a run (unknown metric): the whole study stops, not just the trial."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def placement(out: Path) -> list[str]:
    return [f"output.dir={format_value(str(out))}", f"output.name={RUN_NAME}"]


def write_trial_config(study: Study, trial_dir: Path, params: dict[str, Any], extra: list[str] = ()) -> RunConfig:
    """Resolve the trial's config and write it as `config.yaml`; a folder that holds another trial's config is refused."""
    cfg = resolve_config(copy.deepcopy(study.base), [*to_overrides(params), *extra, *placement(trial_dir)],
                         base_dir=study.base_dir)
    dumped = cfg.model_dump(mode="json")
    path = trial_dir / "config.yaml"
    if path.is_file():
        before = yaml.safe_load(path.read_text(encoding="utf-8"))
        if _without(before) != _without(dumped):
            raise LmtuneError(
                f"{trial_dir} holds a trial with another config; the study folder belongs to another study "
                "(use a new output.dir, or delete the folder to start over)"
            )
    else:
        write_yaml(path, dumped)
    return cfg


def _without(config: dict) -> dict:
    config = copy.deepcopy(config)
    for key in ("resume", "progress", "num_threads"):
        config.get("train", {}).pop(key, None)
    return config


def run_trial(study: Study, trial_dir: Path, params: dict[str, Any], number: int, extra: list[str] = (),
              record_extra: dict[str, Any] | None = None, per_run: list[list[str]] | None = None) -> TrialRecord:
    """Train (or reuse) every run of the trial (one, or one per CV fold) and score it. `per_run[k]` are overrides
    for run k only (PBT: each fold starts from its own checkpoint). Training errors make a failed record; an
    objective that names no metric of the run raises ObjectiveError."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    record = TrialRecord(number, "running", dict(params), dir=str(_relative(trial_dir, study.folder)),
                         worker=worker_id(), extra=dict(record_extra or {}))
    record.extra["overrides"] = to_overrides(params) + list(extra)
    try:
        per_run = per_run or [[] for _ in (study.folds or [None])]
        if study.folds:
            write_trial_config(study, trial_dir, params, extra)
            jobs = [(trial_dir / f"fold-{k}",
                     write_trial_config(study, trial_dir / f"fold-{k}", params, [*extra, *per_run[k], *fold]))
                    for k, fold in enumerate(study.folds)]
        else:
            jobs = [(trial_dir, write_trial_config(study, trial_dir, params, [*extra, *per_run[0]]))]
        record.extra["runs"] = [str(out / RUN_NAME) for out, _ in jobs]
        scores = []
        for out, cfg in jobs:
            metrics = train_or_reuse(cfg, out, trial_dir / "train.log", study.cfg.launch)
            scores.append(score_of(metrics, study, out / RUN_NAME))
    except ObjectiveError:
        raise
    except Exception as err:  # noqa: BLE001 - one broken trial is recorded; the search goes on
        record.state, record.error = "failed", str(err) if isinstance(err, LmtuneError) else f"{type(err).__name__}: {err}"
    else:
        record.state, record.fold_scores = "complete", scores
        record.score = statistics.fmean(scores)
        record.score_std = statistics.pstdev(scores) if len(scores) > 1 else None
    record.seconds = round(time.perf_counter() - started, 2)
    write_json(trial_dir / TRIAL_FILE, record.to_json())
    return record


def train_or_reuse(cfg: RunConfig, out: Path, log: Path, launch: LaunchConfig | None = None) -> dict[str, Any]:
    """A finished run is read, not re-run; a killed one continues (train.resume). With `launch.processes` > 1 the
    run is `torchrun`/`accelerate launch` of the trial's config.yaml (written by `write_trial_config`)."""
    from lmtune.train import rundir

    run_dir = out / RUN_NAME
    if rundir.is_finished(run_dir):
        return json.loads((run_dir / rundir.METRICS_FILE).read_text())
    resume = run_dir.is_dir() and any(run_dir.iterdir())
    if launch is not None and launch.processes > 1:
        from lmtune.train.launch import train_launched

        return train_launched(launch, out / "config.yaml", run_dir, log, ["train.resume=true"] if resume else [])
    if resume:
        cfg = cfg.updated({"train.resume": True})
    from lmtune.train import train

    with open(log, "a", encoding="utf-8") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        return train(cfg).metrics


def score_of(metrics: dict[str, Any], study: Study, run_dir: Path) -> float:
    objective = study.cfg.objective
    split = (metrics.get("splits") or {}).get(objective.split)
    if split is None:
        raise ObjectiveError(
            f"{run_dir} has no {objective.split} metrics (splits: {sorted(metrics.get('splits') or {})}); "
            "set objective.split to one of them"
        )
    if objective.metric not in split:
        available = sorted(k for k, v in split.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise ObjectiveError(
            f"objective.metric={objective.metric!r} is not a {objective.split} metric of the runs"
            f"{hint(objective.metric, available, cutoff=0.4)} (available: {', '.join(available)})"
        )
    value = split[objective.metric]
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LmtuneError(f"{objective.metric} of {run_dir} is {value!r}: no score")
    return float(value)


def read_record(trial_dir: Path) -> TrialRecord | None:
    path = trial_dir / TRIAL_FILE
    if not path.is_file():
        return None
    return TrialRecord.from_json(json.loads(path.read_text()))


def _relative(path: Path, root: Path) -> Path:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return Path(path)
