"""The study config of `lmtune tune`: a base run config, a search space over its dotted keys, an objective, a
budget and an algorithm.

```yaml
base:                                   # any `lmtune train` config
  model: {name: minilm}
  data: {train: ..., validation: ..., text_column: sentence}
  method: {name: lora}
space:                                  # dotted run-config key -> range or list of choices
  train.learning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}
  method.rank: [2, 4, 8, 16, 32]
objective: {metric: accuracy, direction: maximize}
budget: {trials: 12, time_seconds: 1800}
algorithm: tpe                          # tpe | random | grid | de | pbt
cv: {folds: 3}                          # optional: each trial scores the mean over 3 stratified folds
workers: 2
output: {dir: runs/study}
launch: {processes: 2}                  # optional: every run as `torchrun --nproc_per_node 2 -m lmtune train`
```
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from lmtune.config.paths import LocalPath
from lmtune.config.schema import LaunchConfig, StrictModel


class Objective(StrictModel):
    metric: str = "accuracy"
    """A metric of the run's metrics.json (classification: accuracy, macro_f1, roc_auc, pr_auc, loss)."""
    direction: Literal["maximize", "minimize"] = "maximize"
    """Whether a higher or a lower metric is better (`loss`: minimize)."""
    split: Literal["validation", "test"] = "validation"
    """The split whose metric is the score; the validation split unless you mean to tune on test (don't)."""


class Budget(StrictModel):
    trials: int | None = Field(20, gt=0)
    """Trials in all, over every worker (PBT: the population size). None: until `time_seconds` runs out."""
    time_seconds: float | None = Field(None, gt=0)
    """Wall-clock budget of one invocation: no new trial starts after it."""


class CVOptions(StrictModel):
    folds: int = Field(3, ge=2)
    """Stratified folds over the training split (scikit-learn StratifiedKFold); each trial trains one run per
    fold and scores the mean over folds. The configured validation split is not used for scoring."""
    seed: int | None = None
    """Seed of the fold assignment; none takes base.train.seed."""


class OptunaOptions(StrictModel):
    seed: int | None = None
    """Sampler seed; none takes the study seed."""
    n_startup_trials: int = Field(5, ge=0)
    """TPE: random trials before the model-based ones."""
    heartbeat_seconds: int = Field(30, gt=0)
    """How often a worker tells the storage that its running trial is alive (Optuna's heartbeat)."""
    grace_seconds: int = Field(120, gt=0)
    """A running trial whose heartbeat is older than this is taken for dead (its worker was killed, its machine
    lost): another worker marks it failed and runs it again with the same parameters in the same folder."""

    @model_validator(mode="after")
    def _grace_longer_than_heartbeat(self) -> OptunaOptions:
        if self.grace_seconds <= self.heartbeat_seconds:
            raise ValueError("optuna.grace_seconds must be longer than optuna.heartbeat_seconds, or live trials "
                             "would be taken for dead between two heartbeats")
        return self


class DEOptions(StrictModel):
    popsize: int | None = Field(None, ge=4)
    """Population size; none takes max(4, workers). Each population (generation) is evaluated in parallel, up to
    `workers` trials at once."""
    crossover: float | str = 0.5
    """Nevergrad DE crossover rate (or one of its named schemes: `dimension`, `random`, ...)."""
    F1: float = 0.8
    """Differential weight (scale of the difference vector)."""
    F2: float = 0.8
    """Weight of the pull towards the best member."""


class PBTOptions(StrictModel):
    interval_steps: int = Field(20, gt=0)
    """Optimiser steps between two perturbation points (each interval is one `lmtune train` run that starts from
    the previous interval's weights)."""
    intervals: int = Field(4, ge=2)
    """Intervals each member trains for."""
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    """The bottom fraction of the population copies the top fraction's checkpoint (exploit), then perturbs its
    hyper-parameters (explore)."""
    resample_probability: float = Field(0.25, ge=0, le=1)
    """Chance that explore resamples a hyper-parameter from the space instead of scaling it by 0.8 or 1.2."""
    synch: bool = False
    """Synchronous PBT: wait for the whole population at each perturbation point (deterministic exploits)."""
    address: str | None = None
    """`ray.init(address=...)`: none starts a local Ray; `auto` or `ray://host:10001` joins a cluster."""
    cpus_per_trial: float = Field(1, gt=0)
    """CPUs Ray reserves for each member (its torch thread count when base.train.num_threads is not set)."""
    ray_temp_dir: str | None = None
    """A private temp folder for the local Ray (tests; avoids joining a stale /tmp/ray cluster)."""


class StudyOutput(StrictModel):
    dir: Annotated[str, LocalPath()] = "runs/study"
    """The study folder (relative: to `base_dir`): trials/<n>/config.yaml and run directories, the Optuna database, trials.csv,
    best_config.yaml, summary.json and report.html."""


class StudyConfig(StrictModel):
    """A hyper-parameter search over dotted keys of a base run config."""

    base: dict[str, Any] = Field(default_factory=dict)
    """The run config every trial starts from (the keys of `lmtune train` configs)."""
    space: dict[str, Any] = Field(default_factory=dict)
    """Dotted run-config key → `{low, high, log, step, type}` (a range) or a list of choices."""
    objective: Objective = Field(default_factory=Objective)
    """What is scored and which way is better."""
    budget: Budget = Field(default_factory=Budget)
    """When the search stops."""
    algorithm: str = "tpe"
    """`tpe`, `random`, `grid` (Optuna), `de` (Nevergrad differential evolution), `pbt` (Ray Tune)."""
    seed: int = 0
    """Seed of the search algorithm (not of training: that is base.train.seed)."""
    cv: CVOptions | None = None
    """k-fold cross-validation for every trial; none scores one run on the validation split."""
    workers: int = Field(1, gt=0)
    """Trials run at once on this machine (processes; Optuna: worker processes on one storage; DE: a process
    pool per population; PBT: concurrent Ray trials). Each trial's torch threads default to cores / workers."""
    storage: str | None = None
    """Optuna storage: none is a SQLite file in the study folder (resumable); `memory` keeps it in memory (no
    resume); any RDB URL (`sqlite:///x.db`, `postgresql://...`) lets workers on many machines share one study."""
    study_name: str | None = None
    """Optuna study name inside the storage; none takes the output folder's name."""
    reference: bool = False
    """Also score the base config itself (no overrides), reported beside the best trial."""
    optuna: OptunaOptions = Field(default_factory=OptunaOptions)
    """Options of tpe / random / grid."""
    de: DEOptions = Field(default_factory=DEOptions)
    """Options of differential evolution."""
    pbt: PBTOptions = Field(default_factory=PBTOptions)
    """Options of population-based training."""
    output: StudyOutput = Field(default_factory=StudyOutput)
    """Where the study folder is."""
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
    """How each trial's run trains: in the worker's process (the default) or as several processes through
    torchrun or accelerate launch (`processes: N`), output in the trial's train.log."""
    base_dir: str | None = None
    """The folder every relative path of the study and of its trials resolves against; none: the directory
    `lmtune tune` was run from (filled in when the study is loaded, so no worker's working directory matters)."""

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        from lmtune.tune.algorithms import ALGORITHMS

        ALGORITHMS.get(value)  # raises with "did you mean"
        return value

    @model_validator(mode="after")
    def _bounded(self) -> StudyConfig:
        if self.budget.trials is None and self.budget.time_seconds is None:
            raise ValueError("give budget.trials and/or budget.time_seconds: a study without either never ends")
        return self

    @property
    def greater_is_better(self) -> bool:
        return self.objective.direction == "maximize"
