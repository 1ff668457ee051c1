"""Population-based training with Ray Tune's `PopulationBasedTraining`.

Each member is a Ray trial running `_member`: it trains in intervals of `pbt.interval_steps` optimiser steps,
each interval an ordinary `lmtune train` run (a resolved config.yaml in the study folder) that starts from the
previous interval's weights (`train.init_from`) with the member's current hyper-parameters and a constant
learning rate. After each interval it reports the score with a checkpoint: the interval's run directories and
a state.json. When PBT exploits, Ray restarts the member from a better member's checkpoint with perturbed
hyper-parameters: the member copies that checkpoint into its folder (`start-NN/`), continues from it, and
records the exploit (pbt/exploits.jsonl) and every interval (pbt/schedule.jsonl: the schedules in the report).

Only hyper-parameters that can change between intervals may be searched (PBT_MUTABLE); shape parameters such as
`method.rank` would not fit the copied weights and are refused. Adam's moments restart at each interval (the
weights carry over; the checkpoint is a run directory `lmtune train` can start from).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmtune.errors import LmtuneError
from lmtune.tune.algorithms import SearchAlgorithm, register_algorithm
from lmtune.tune.space import Param, format_value
from lmtune.tune.trial import TrialRecord, run_trial

if TYPE_CHECKING:
    from lmtune.tune.study import Study

PBT_MUTABLE = ("train.learning_rate", "train.head_learning_rate", "train.weight_decay", "train.batch_size",
               "train.gradient_accumulation_steps")
SCHEDULE, EXPLOITS = "pbt/schedule.jsonl", "pbt/exploits.jsonl"
CHECKPOINTS_KEPT = 4  # NOTES.md: with 2 or fewer, PBT lost the checkpoints it had to copy


def _domain(param: Param):
    from ray import tune

    if param.kind == "categorical":
        return list(param.choices)
    if param.kind == "int":
        return tune.lograndint(int(param.low), int(param.high) + 1) if param.log else tune.randint(int(param.low), int(param.high) + 1)
    return tune.loguniform(param.low, param.high) if param.log else tune.uniform(param.low, param.high)


def _append(path: Path, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:  # one short line per write: appends do not interleave
        handle.write(json.dumps(entry) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _member(config: dict[str, Any], raw: dict[str, Any]) -> None:
    """One PBT member (runs in a Ray worker)."""
    from ray import tune

    from lmtune.tune.study import Study

    study = Study.from_raw(raw)
    options = study.cfg.pbt
    trial_id = tune.get_context().get_trial_id()
    member_dir = study.folder / "trials" / trial_id
    params = {p.key: p.clip(config[p.key]) for p in study.params}
    runs_count = len(study.folds) or 1
    start, init, restart = 0, None, len(list(member_dir.glob("start-*")))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = json.loads((Path(folder) / "state.json").read_text())
            start = state["interval"] + 1
            copy = member_dir / f"start-{restart:02d}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(folder, copy)  # the checkpoint, copied: what this member continues from
        init = [copy / f"run-{k}" for k in range(runs_count)]
        if state["trial_id"] != trial_id:
            before = [s for s in read_jsonl(study.folder / SCHEDULE) if s["trial_id"] == trial_id]
            _append(study.folder / EXPLOITS, {
                "trial_id": trial_id, "donor": state["trial_id"], "donor_interval": state["interval"],
                "next_interval": start, "checkpoint_copy": str(copy), "donor_runs": state["runs"],
                "previous_runs": before[-1]["runs"] if before else None,
                "previous_params": before[-1]["params"] if before else None, "new_params": params,
            })
    exploited_from = state["trial_id"] if checkpoint is not None and state["trial_id"] != trial_id else None
    for interval in range(start, options.intervals):
        suffix = "" if checkpoint is None and not restart else f"-r{restart}"  # a restart never reuses an old run
        out = member_dir / f"interval-{interval:02d}{suffix}"
        extra = [f"train.max_steps={options.interval_steps}", f"train.seed={study.base['train'].get('seed', 42) + interval}",
                 "train.lr_scheduler=constant", "train.warmup_ratio=0.0", "train.eval_every='no'"]
        per_run = [[f"train.init_from={format_value(str(init[k]))}"] if init else [] for k in range(runs_count)]
        record = run_trial(study, out, params, interval, extra=extra, per_run=per_run)
        entry = {"trial_id": trial_id, "interval": interval, "params": params, "score": record.score,
                 "score_std": record.score_std, "runs": record.extra.get("runs"), "dir": record.dir,
                 "exploited_from": exploited_from, "error": record.error, "seconds": record.seconds,
                 "time": time.time()}
        _append(study.folder / SCHEDULE, entry)
        if record.state != "complete":
            raise RuntimeError(f"PBT member {trial_id} interval {interval} failed: {record.error}")
        exploited_from = None
        tune.report({"score": record.score, "interval": interval}, checkpoint=_checkpoint(member_dir, interval, trial_id, params, record))
        init = [Path(run) for run in record.extra["runs"]]


def _checkpoint(member_dir: Path, interval: int, trial_id: str, params: dict, record: TrialRecord):
    """The interval's run directories plus state.json, as a Ray checkpoint (Ray copies it into its storage)."""
    from ray.tune import Checkpoint

    folder = member_dir / f".checkpoint-{interval:02d}"
    shutil.rmtree(folder, ignore_errors=True)
    for k, run in enumerate(record.extra["runs"]):
        shutil.copytree(run, folder / f"run-{k}", ignore=shutil.ignore_patterns("checkpoints"))
    state = {"trial_id": trial_id, "interval": interval, "params": params, "score": record.score,
             "runs": record.extra["runs"]}
    (folder / "state.json").write_text(json.dumps(state))
    return Checkpoint.from_directory(str(folder))


@register_algorithm
class PopulationBasedTraining(SearchAlgorithm):
    name = "pbt"
    summary = "population-based training (Ray Tune): exploit copies a better member's checkpoint, explore perturbs"

    def check(self, study: Study) -> None:
        refused = [p.key for p in study.params if p.key not in PBT_MUTABLE]
        if refused:
            shape = [k for k in refused if k.startswith("method.")]
            why = (f"{', '.join(shape)} shapes the model (a copied checkpoint would not fit it); " if shape else "")
            raise LmtuneError(
                f"pbt changes hyper-parameters in the middle of training and cannot search {', '.join(refused)}: {why}"
                f"pbt can search only {', '.join(PBT_MUTABLE)}. Search the others with tpe, random, grid or de."
            )
        if (study.cfg.budget.trials or 0) < 2:
            raise LmtuneError("pbt needs a population: budget.trials is its size (at least 2)")

    def run(self, study: Study, worker_only: bool = False) -> None:
        import ray
        from ray import tune
        from ray.tune.schedulers import PopulationBasedTraining as RayPBT

        if worker_only:
            raise LmtuneError("--worker joins an Optuna storage; pbt scales out with a Ray cluster (pbt.address)")
        cfg, options = study.cfg, study.cfg.pbt
        started = False
        if not ray.is_initialized():
            if options.address:
                ray.init(address=options.address, include_dashboard=False, log_to_driver=False)
            else:
                cpus = max(os.cpu_count() or 1, int(cfg.workers * options.cpus_per_trial))
                # A Ray of our own serves this process only: on loopback, not on the machine's network address.
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, _temp_dir=options.ray_temp_dir,
                         _node_ip_address="127.0.0.1")
            started = True
        # Ray snapshots the experiment (each member's latest checkpoint) every 10 s or more by default; a study
        # killed between two snapshots would train the intervals since the last one again after Tuner.restore.
        # An interval is a whole training run, so a snapshot per second costs nothing.
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
        try:
            random.seed(cfg.seed)
            domains = {p.key: _domain(p) for p in study.params}
            scheduler = RayPBT(
                time_attr="training_iteration", perturbation_interval=1, hyperparam_mutations=domains,
                quantile_fraction=options.quantile_fraction, resample_probability=options.resample_probability,
                synch=options.synch,
            )
            member = tune.with_resources(tune.with_parameters(_member, raw=study.to_raw()), {"cpu": options.cpus_per_trial})
            path = study.folder / "ray" / "pbt"
            if tune.Tuner.can_restore(str(path)):
                tuner = tune.Tuner.restore(str(path), trainable=member, resume_errored=True)
            else:
                tuner = tune.Tuner(
                    member, param_space=dict(domains),
                    tune_config=tune.TuneConfig(metric="score", mode="max" if cfg.greater_is_better else "min",
                                                scheduler=scheduler, num_samples=cfg.budget.trials,
                                                max_concurrent_trials=cfg.workers, reuse_actors=True,
                                                time_budget_s=cfg.budget.time_seconds),
                    run_config=tune.RunConfig(
                        name="pbt", storage_path=str(study.folder / "ray"), verbose=1,
                        stop={"interval": options.intervals - 1},  # no exploit after the last interval
                        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
                    ),
                )
            results = tuner.fit()
            self._lost = [f"{type(e).__name__}: {e}" for e in results.errors]
        finally:
            if started:
                ray.shutdown()
        for record in self.records(study):
            print(f"member {record.extra['trial_id']}: {study.cfg.objective.metric} {record.score} after "
                  f"{len(record.extra['schedule'])} intervals; final {record.params}")

    def __init__(self) -> None:
        self._lost: list[str] = []  # errors of members that died before their first report (from Ray's results)

    def lost_errors(self) -> list[str]:
        return list(self._lost)

    def records(self, study: Study) -> list[TrialRecord]:
        """One record per member: its last interval's score and hyper-parameters, its whole schedule in extra."""
        by_member: dict[str, list[dict[str, Any]]] = {}
        for entry in read_jsonl(study.folder / SCHEDULE):
            by_member.setdefault(entry["trial_id"], []).append(entry)
        records = []
        for number, (trial_id, entries) in enumerate(sorted(by_member.items())):
            last = entries[-1]
            finished = last["interval"] == study.cfg.pbt.intervals - 1 and last["score"] is not None
            state = "complete" if finished else ("failed" if last.get("error") else "running")
            config = Path(last["dir"]) / "config.yaml"
            seconds = round(sum(entry.get("seconds") or 0 for entry in entries), 2)  # every interval it trained
            records.append(TrialRecord(
                number, state, last["params"], score=last["score"], score_std=last.get("score_std"),
                seconds=seconds, dir=str(Path("trials") / trial_id), error=last.get("error"),
                extra={"trial_id": trial_id, "schedule": entries, "config": str(config)},
            ))
        return records
