"""TPE, random and grid search with Optuna.

The Optuna study lives in an RDB storage: by default a SQLite file in the study folder, so a killed study resumes
(finished trials are in the database and their run directories hold metrics.json). Many workers share a study by
pointing at one storage URL: local worker processes (`workers: N`), or `lmtune tune study.yaml --worker` on other
machines against a PostgreSQL/MySQL URL.

The trial budget is global: a trial counts when it is complete, failed (its error recorded), or running; a trial
that starts when `budget.trials` earlier trials already count is pruned unrun, so two workers never overshoot.
A trial whose process died (a local pid that is gone, or an Optuna heartbeat older than its grace period on other
machines, `optuna.grace_seconds`) is marked failed and enqueued again with the same parameters and the same folder: its run continues
from its last checkpoint.
"""

from __future__ import annotations

import os
import random
import socket
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmtune.errors import LmtuneError
from lmtune.tune.algorithms import SearchAlgorithm, register_algorithm
from lmtune.tune.trial import ObjectiveError, TrialRecord, run_trial, worker_id

if TYPE_CHECKING:
    from lmtune.tune.study import Study

class TrialFailed(Exception):
    """Training failed; Optuna records the trial as FAIL and the search goes on."""


class OptunaSearch(SearchAlgorithm):
    def sampler(self, study: Study):
        raise NotImplementedError

    def seed(self, study: Study) -> int:
        return study.cfg.optuna.seed if study.cfg.optuna.seed is not None else study.cfg.seed

    def check(self, study: Study) -> None:
        storage = study.cfg.storage
        if storage == "memory" and study.cfg.workers > 1:
            raise LmtuneError("storage: memory cannot be shared by several workers; leave storage unset (SQLite file)")

    # --- storage ---------------------------------------------------------------------------------------

    def storage_url(self, study: Study) -> str | None:
        if study.cfg.storage == "memory":
            return None
        return study.cfg.storage or f"sqlite:///{study.folder / 'optuna.db'}"

    def load(self, study: Study):
        import optuna
        from sqlalchemy.exc import SQLAlchemyError

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        url = self.storage_url(study)
        if url is None:
            if (study.folder / "trials").is_dir() and any((study.folder / "trials").iterdir()):
                raise LmtuneError(f"{study.folder} holds trials of an earlier run, which storage: memory cannot resume; "
                                  "leave storage unset (SQLite) or use a new output.dir")
            storage = optuna.storages.InMemoryStorage()
        direction = study.cfg.objective.direction
        name = study.cfg.study_name or study.folder.name
        for attempt in range(5):
            try:
                if url is not None:
                    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
                    storage = optuna.storages.RDBStorage(
                        url, engine_kwargs=engine, heartbeat_interval=study.cfg.optuna.heartbeat_seconds,
                        grace_period=study.cfg.optuna.grace_seconds,
                        heartbeat_stale_trial_callback=_retry,
                    )
                return optuna.create_study(study_name=name, storage=storage, sampler=self.sampler(study),
                                           direction=direction, load_if_exists=True)
            except SQLAlchemyError:  # workers starting together race to create the schema: the loser retries
                if attempt == 4:
                    raise
                time.sleep(0.5 + random.random())
        raise AssertionError("unreachable")

    # --- running ---------------------------------------------------------------------------------------

    def run(self, study: Study, worker_only: bool = False) -> None:
        optuna_study = self._study = self.load(study)
        _fail_dead_trials(optuna_study)
        processes = []
        if study.cfg.workers > 1 and not worker_only:
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            for _ in range(study.cfg.workers - 1):
                process = context.Process(target=_worker_entry, args=(study.to_raw(),), daemon=False)
                process.start()
                processes.append(process)
        try:
            self.work(study, optuna_study)
        finally:
            for process in processes:
                process.join()
        failed = [p.exitcode for p in processes if p.exitcode]
        if failed:
            raise LmtuneError(f"{len(failed)} worker process(es) failed (exit codes {failed}); see their output above")

    def work(self, study: Study, optuna_study) -> None:
        import optuna

        from lmtune.tune.study import Progress

        budget = study.cfg.budget.trials
        done = [r for r in self.records(study, optuna_study) if r.state in ("complete", "failed")]
        progress = Progress(study, budget, done)

        def objective(trial: optuna.Trial) -> float:
            trial.set_user_attr("worker", worker_id())
            _fail_dead_trials(trial.study)
            if budget is not None and _counted(trial.study, before=trial.number) >= budget:
                trial.set_user_attr("skipped", "budget reached")
                trial.study.stop()
                raise optuna.TrialPruned("budget reached")
            params = {p.key: _suggest(trial, p) for p in study.params}
            folder = trial.user_attrs.get("dir") or f"trials/{trial.number:04d}"
            trial.set_user_attr("dir", folder)
            try:
                record = run_trial(study, study.folder / folder, params, trial.number)
            except ObjectiveError as err:
                trial.set_user_attr("error", str(err))
                raise
            progress.finished(record)
            if record.state != "complete":
                trial.set_user_attr("error", record.error or "failed")
                raise TrialFailed(record.error)
            trial.set_user_attr("fold_scores", record.fold_scores)
            trial.set_user_attr("score_std", record.score_std)
            trial.set_user_attr("seconds", record.seconds)
            return record.score

        def stop_when_spent(optuna_study, _trial) -> None:
            if budget is not None and _counted(optuna_study) >= budget:
                optuna_study.stop()

        try:
            if budget is None or _counted(optuna_study) < budget:
                optuna_study.optimize(objective, timeout=study.cfg.budget.time_seconds, callbacks=[stop_when_spent],
                                      catch=(TrialFailed,), gc_after_trial=False)
        finally:
            progress.close()

    def records(self, study: Study, optuna_study=None) -> list[TrialRecord]:
        from optuna.trial import TrialState

        optuna_study = optuna_study or getattr(self, "_study", None) or self.load(study)
        records = []
        for trial in optuna_study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            if trial.state in (TrialState.PRUNED, TrialState.WAITING) or "skipped" in attrs:
                continue
            state = {TrialState.COMPLETE: "complete", TrialState.RUNNING: "running"}.get(
                trial.state, "failed" if "error" in attrs else "killed")
            seconds = attrs.get("seconds")
            if seconds is None and trial.datetime_start and trial.datetime_complete:
                seconds = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 2)
            records.append(TrialRecord(
                trial.number, state, dict(trial.params), score=trial.value, score_std=attrs.get("score_std"),
                fold_scores=attrs.get("fold_scores") or [], seconds=seconds, dir=attrs.get("dir"),
                error=attrs.get("error"), worker=attrs.get("worker"),
                extra={"retry_of": attrs["retry_of"]} if "retry_of" in attrs else {},
            ))
        return records


def _worker_entry(raw: dict[str, Any]) -> None:
    from lmtune.tune.study import Study

    study = Study.from_raw(raw)
    study.algorithm.run(study, worker_only=True)


def _suggest(trial, param) -> Any:
    if param.kind == "categorical":
        return trial.suggest_categorical(param.key, param.choices)
    if param.kind == "int":
        return trial.suggest_int(param.key, int(param.low), int(param.high), step=int(param.step or 1), log=param.log)
    return trial.suggest_float(param.key, param.low, param.high, log=param.log, step=param.step)


def _counts(trial) -> bool:
    from optuna.trial import TrialState

    if "skipped" in trial.user_attrs:
        return False
    return trial.state in (TrialState.COMPLETE, TrialState.RUNNING) or (
        trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def _counted(optuna_study, before: int | None = None) -> int:
    trials = optuna_study.get_trials(deepcopy=False)
    return sum(1 for t in trials if _counts(t) and (before is None or t.number < before))


def _retry(optuna_study, trial) -> None:
    """A trial whose worker died runs again with the same parameters, in the same folder (its run resumes)."""
    if "error" in trial.user_attrs or "skipped" in trial.user_attrs:
        return
    attrs = {"retry_of": trial.number}
    if "dir" in trial.user_attrs:
        attrs["dir"] = trial.user_attrs["dir"]
    optuna_study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    print(f"trial {trial.number} was killed; it runs again with the same parameters in {attrs.get('dir')}", flush=True)


def _fail_dead_trials(optuna_study) -> None:
    """Running trials of this machine whose process is gone (a killed study) are failed and retried."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    host = socket.gethostname()
    for trial in optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        name, _, pid = worker.rpartition(":")
        if name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            optuna_study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # another worker failed it first, and retries it
            continue
        _retry(optuna_study, trial)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path(f"/proc/{pid}/status").is_file() or "zombie" not in Path(f"/proc/{pid}/status").read_text()


@register_algorithm
class TPE(OptunaSearch):
    name = "tpe"
    summary = "Optuna's tree-structured Parzen estimator (the default)"

    def sampler(self, study: Study):
        import optuna

        return optuna.samplers.TPESampler(seed=self.seed(study), n_startup_trials=study.cfg.optuna.n_startup_trials)


@register_algorithm
class RandomSearch(OptunaSearch):
    name = "random"
    summary = "Optuna's random sampler"

    def sampler(self, study: Study):
        import optuna

        return optuna.samplers.RandomSampler(seed=self.seed(study))


@register_algorithm
class GridSearch(OptunaSearch):
    name = "grid"
    summary = "every combination of the listed values (Optuna's grid sampler); stops when the grid is done"

    def check(self, study: Study) -> None:
        super().check(study)
        for param in study.params:
            param.grid()  # raises for continuous ranges

    def sampler(self, study: Study):
        import optuna

        return optuna.samplers.GridSampler({p.key: p.grid() for p in study.params}, seed=self.seed(study))
