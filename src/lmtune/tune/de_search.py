"""Differential evolution with Nevergrad (`ng.families.DifferentialEvolution`, ask/tell).

Each generation asks for a whole population, evaluates it in parallel (a process pool of `workers` processes;
each trial trains with cores / workers torch threads) and tells the scores back in ask order. Ranges map to
Nevergrad's `Scalar`/`Log` (ints cast), lists of choices to `TransitionChoice` (an ordered index: rank 8 lies
between 4 and 16). The first population is a Latin hypercube over the whole space.

Resume: the optimizer is seeded, so replaying the asks gives the same candidates; a candidate whose trial folder
already holds a finished trial with the same parameters is told its stored score instead of being trained again.
A candidate equal to an earlier one (DE proposes duplicates on small choice sets) reuses that trial's score.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from lmtune.errors import LmtuneError
from lmtune.tune.algorithms import SearchAlgorithm, register_algorithm
from lmtune.tune.space import Param, plain
from lmtune.tune.trial import TrialRecord, read_record, run_trial

if TYPE_CHECKING:
    from lmtune.tune.study import Study


def _to_nevergrad(param: Param):
    import nevergrad as ng

    if param.kind == "categorical":
        return ng.p.TransitionChoice(param.choices)
    scalar = ng.p.Log(lower=param.low, upper=param.high) if param.log else ng.p.Scalar(lower=param.low, upper=param.high)
    return scalar.set_integer_casting() if param.kind == "int" else scalar


def _trial_job(raw: dict[str, Any], trial_dir: str, params: dict[str, Any], number: int, extra: dict) -> TrialRecord:
    """One trial in a pool process (spawned: imports lmtune afresh; the folds are already on disk)."""
    from pathlib import Path

    from lmtune.tune.study import Study

    study = Study.from_raw(raw)
    return run_trial(study, Path(trial_dir), params, number, record_extra=extra)


@register_algorithm
class DifferentialEvolution(SearchAlgorithm):
    name = "de"
    summary = "differential evolution (Nevergrad), each population evaluated in parallel"

    def check(self, study: Study) -> None:
        if study.cfg.budget.trials is None and study.cfg.budget.time_seconds is None:
            raise LmtuneError("de needs a budget: budget.trials and/or budget.time_seconds")

    def popsize(self, study: Study) -> int:
        return study.cfg.de.popsize or max(4, study.cfg.workers)

    def optimizer(self, study: Study):
        import nevergrad as ng
        import numpy as np

        parametrization = ng.p.Dict(**{p.key: _to_nevergrad(p) for p in study.params})
        parametrization.random_state = np.random.RandomState(study.cfg.seed)
        options = study.cfg.de
        family = ng.families.DifferentialEvolution(popsize=self.popsize(study), initialization="LHS",
                                                   crossover=options.crossover, F1=options.F1, F2=options.F2)
        return family(parametrization=parametrization, budget=study.cfg.budget.trials, num_workers=self.popsize(study))

    def run(self, study: Study, worker_only: bool = False) -> None:
        if worker_only:
            raise LmtuneError("--worker joins an Optuna storage; de runs its own workers (set `workers: N`)")
        from lmtune.tune.study import Progress

        cfg = study.cfg
        optimizer = self.optimizer(study)
        params_of = {p.key: p for p in study.params}
        deadline = time.monotonic() + cfg.budget.time_seconds if cfg.budget.time_seconds else math.inf
        total = cfg.budget.trials
        progress = Progress(study, total)
        pool = _pool(cfg.workers)
        seen: dict[tuple, TrialRecord] = {}
        number, generation = 0, 0
        try:
            while (total is None or number < total) and time.monotonic() < deadline:
                size = self.popsize(study) if total is None else min(self.popsize(study), total - number)
                candidates = [optimizer.ask() for _ in range(size)]
                jobs = []
                for candidate in candidates:
                    params = {k: params_of[k].clip(plain(v)) for k, v in candidate.value.items()}
                    jobs.append(self._job(study, pool, number, params, generation, seen))
                    number += 1
                for candidate, job in zip(candidates, jobs):
                    record = job.result() if hasattr(job, "result") else job
                    seen.setdefault(_key(record.params), record)
                    optimizer.tell(candidate, self._loss(study, record))
                    progress.finished(record)
                generation += 1
        finally:
            progress.close()
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    def _job(self, study: Study, pool, number: int, params: dict[str, Any], generation: int, seen: dict):
        trial_dir = study.folder / "trials" / f"{number:04d}"
        stored = read_record(trial_dir)
        if stored is not None and stored.state in ("complete", "failed") and _key(stored.params) == _key(params):
            return stored  # finished before a kill: not re-run
        earlier = seen.get(_key(params))
        if earlier is not None and earlier.state == "complete":
            from lmtune.io import write_json

            record = TrialRecord(number, "complete", params, earlier.score, earlier.score_std, earlier.fold_scores,
                                 0.0, earlier.dir, extra={"generation": generation, "same_as": earlier.number})
            trial_dir.mkdir(parents=True, exist_ok=True)
            write_json(trial_dir / "trial.json", record.to_json())
            return record
        extra = {"generation": generation}
        if pool is None:
            return run_trial(study, trial_dir, params, number, record_extra=extra)
        return pool.submit(_trial_job, study.to_raw(), str(trial_dir), params, number, extra)

    def _loss(self, study: Study, record: TrialRecord) -> float:
        if record.state != "complete" or record.score is None:
            return math.inf  # Nevergrad ranks a failed candidate last
        return -record.score if study.cfg.greater_is_better else record.score

    def records(self, study: Study) -> list[TrialRecord]:
        from lmtune.tune.study import records_from_folders

        return records_from_folders(study)


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, round(v, 12) if isinstance(v, float) else v) for k, v in params.items()))


def _pool(workers: int):
    if workers <= 1:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
