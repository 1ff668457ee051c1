"""`lmtune tune`: check the study, prepare CV folds, run the algorithm, write the summary and the report."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lmtune.config.loading import apply_overrides, explain, read_yaml
from lmtune.config.paths import absolute, resolve_paths
from lmtune.errors import LmtuneError
from lmtune.runconfig import with_absolute_paths
from lmtune.tune.algorithms import ALGORITHMS
from lmtune.tune.config import StudyConfig
from lmtune.tune.space import Param, parse_space, show
from lmtune.tune.summary import StudyResult, write_summary
from lmtune.tune.trial import TrialRecord, read_record, run_trial

STUDY_FILE = "study.yaml"


def load_study_config(path: str | Path | None, overrides: list[str] = ()) -> StudyConfig:
    """YAML plus overrides (`budget.trials=4`, `base.train.epochs=1`, `algorithm=de`)."""
    raw = apply_overrides(read_yaml(path) if path else {}, list(overrides))
    return validate_study(raw)


def validate_study(raw: dict[str, Any]) -> StudyConfig:
    """The checked study, its paths resolved once against `base_dir` (default: the working directory)."""
    try:
        cfg = StudyConfig.model_validate(raw)
    except ValidationError as err:
        raise LmtuneError(explain(err, raw, StudyConfig).replace("invalid config", "invalid study config")) from None
    cfg = cfg.updated({"base_dir": str(Path(cfg.base_dir or Path.cwd()).absolute())})
    return resolve_paths(cfg, cfg.base_dir)


class Study:
    """A checked study: the parsed space, the base config trials start from, the CV folds, the study folder."""

    def __init__(self, cfg: StudyConfig, prepare: bool = True):
        self.cfg = cfg
        self.folder = Path(absolute(cfg.output.dir, self.base_dir))
        self.base = self._trial_base()  # a bad base config fails here, before anything runs
        self.params: list[Param] = parse_space(cfg.space, self.base)
        self.algorithm = ALGORITHMS.build(cfg.algorithm)
        self.algorithm.check(self)
        self.folds: list[list[str]] = []
        if cfg.cv and prepare:
            from lmtune.tune.folds import prepare_folds

            self.folds = prepare_folds(self)

    def _trial_base(self) -> dict[str, Any]:
        """The base config with absolute paths and the study's defaults: threads split between workers, no
        per-step progress bar."""
        cfg = self.cfg
        base = with_absolute_paths(cfg.base, self.base_dir)
        train = base.setdefault("train", {})
        if train.get("num_threads") is None:
            cpus = cfg.pbt.cpus_per_trial if cfg.algorithm == "pbt" else (os.cpu_count() or 1) / cfg.workers
            train["num_threads"] = max(1, int(cpus))
        train.setdefault("progress", False)
        return base

    @property
    def base_dir(self) -> str:
        return self.cfg.base_dir or str(Path.cwd())

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def to_raw(self) -> dict[str, Any]:
        """What a worker process needs to rebuild this study (folds already on disk)."""
        return {"cfg": self.cfg.model_dump(mode="json"), "folds": self.folds}

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Study:
        study = cls(StudyConfig.model_validate(raw["cfg"]), prepare=False)
        study.folds = raw["folds"]
        return study

    def better(self, a: float | None, b: float | None) -> bool:
        if a is None:
            return False
        return b is None or (a > b if self.cfg.greater_is_better else a < b)



def run_study(cfg: StudyConfig, worker_only: bool = False) -> StudyResult:
    study = Study(cfg)
    study.folder.mkdir(parents=True, exist_ok=True)
    _write_study_file(study)
    started = time.perf_counter()
    print(f"study {study.folder}: {cfg.algorithm}, {_budget_text(cfg)}, objective {cfg.objective.direction} "
          f"{cfg.objective.metric}" + (f" (mean over {cfg.cv.folds} folds)" if cfg.cv else ""), flush=True)
    for param in study.params:
        print(f"  {param.describe()}")
    reference = run_reference(study) if cfg.reference and not worker_only else read_record(study.folder / "reference")
    study.algorithm.run(study, worker_only=worker_only)
    records = study.algorithm.records(study)
    result = write_summary(study, records, reference, time.perf_counter() - started)
    _fail_if_nothing_completed(study, records)
    return result


def _fail_if_nothing_completed(study: Study, records: list[TrialRecord]) -> None:
    """A study in which no trial completed is an error (exit non-zero), with the first trial's error."""
    if any(r.state == "complete" for r in records):
        return
    errors = [r.error for r in records if r.error] + study.algorithm.lost_errors()
    if not records and not errors:
        return  # nothing was left to run (a budget already spent by other workers)
    first = errors[0] if errors else "no error recorded"
    raise LmtuneError(f"no trial of the study completed ({len(records)} trial(s) ran); the first error: {first}\n"
                      f"every trial's error is in {study.folder / 'trials.csv'}")


def run_reference(study: Study) -> TrialRecord:
    """The base config as it is (no overrides), scored like a trial: the number the search has to beat."""
    record = read_record(study.folder / "reference")
    if record is None or record.state != "complete":
        record = run_trial(study, study.folder / "reference", {}, -1)
    print(f"reference (base config): {_score_text(record)}", flush=True)
    return record


def _write_study_file(study: Study) -> None:
    path = study.folder / STUDY_FILE
    data = study.cfg.model_dump(mode="json")
    if path.is_file():
        before = yaml.safe_load(path.read_text())
        # how long and where, not what is searched (workers on other machines run from other folders)
        free = ("budget", "workers", "storage", "reference", "base_dir")
        same = {k: v for k, v in before.items() if k not in free}
        now = {k: v for k, v in data.items() if k not in free}
        if same != now:
            raise LmtuneError(
                f"{study.folder} holds another study ({STUDY_FILE} differs in base, space, objective or algorithm); "
                "use a new output.dir to start a new study, or the same config to resume it"
            )
    from lmtune.io import write_yaml

    write_yaml(path, data)


def _budget_text(cfg: StudyConfig) -> str:
    parts = [f"{cfg.budget.trials} trials"] if cfg.budget.trials else []
    if cfg.budget.time_seconds:
        parts.append(f"{cfg.budget.time_seconds:.0f} s")
    return " / ".join(parts) + f", {cfg.workers} worker(s)"


def _score_text(record: TrialRecord | None) -> str:
    if record is None or record.score is None:
        return f"failed ({record.error})" if record else "none"
    spread = f" ± {record.score_std:.4f}" if record.score_std is not None else ""
    return f"{record.score:.4f}{spread}"


class Progress:
    """One line per finished trial (score, params, best so far), over a tqdm bar of trials."""

    def __init__(self, study: Study, total: int | None, done: list[TrialRecord] = ()):
        from tqdm.auto import tqdm

        self.study, self.best = study, None
        for record in done:
            self._update_best(record)
        self.bar = tqdm(total=total, initial=len(done), desc=f"tune {study.cfg.algorithm}", unit="trial")

    def _update_best(self, record: TrialRecord) -> None:
        if record.state == "complete" and self.study.better(record.score, self.best.score if self.best else None):
            self.best = record

    def finished(self, record: TrialRecord) -> None:
        self._update_best(record)
        params = " ".join(f"{k}={show(v)}" for k, v in record.params.items())
        best = f"best {self.best.score:.4f} (#{self.best.number})" if self.best else "best none"
        self.bar.write(f"trial {record.number:>4}  {_score_text(record):<18} {params}   {best}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def records_from_folders(study: Study) -> list[TrialRecord]:
    records = []
    for path in sorted((study.folder / "trials").glob("*/trial.json")):
        records.append(TrialRecord.from_json(json.loads(path.read_text())))
    return sorted(records, key=lambda r: r.number)



def summarize_study(cfg: StudyConfig) -> StudyResult:
    """The summary and report from what has run so far (e.g. after distributed workers finish)."""
    study = Study(cfg, prepare=False)
    if not (study.folder / STUDY_FILE).is_file():
        raise LmtuneError(f"{study.folder} holds no study yet; run `lmtune tune` first")
    return write_summary(study, study.algorithm.records(study), read_record(study.folder / "reference"), 0.0)
