"""What a finished run's `metrics.json` holds, as typed models: written through them (a missing or misspelt field
fails when the file is written, not when compare reads it) and read through them (compare and the leaderboard get
typed values, not `dict.get`).

The file's shape is older than these models and stays as it was, so old run directories still read:

    {<the headline split's metrics, flat>, "eval_split": "test", "splits": {"validation": {...}, "test": {...}},
     "trainable_params": ..., ..., "evaluations": [...]}

The flat copy of the headline split is written from `splits[eval_split]` and, when read, checked against it.
Keys keep the order they were given in, so a file read and written again is the same file.

Per split, the fields that are not numbers are declared (confusion matrix, per-type scores, signatures); the
scores that vary by task (accuracy, macro_f1, f1, bleu, ...) are typed extras: any name, a number or None.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_serializer, model_validator

from lmtune.errors import LmtuneError
from lmtune.io import write_json

METRICS_FILE = "metrics.json"


class _Ordered(BaseModel):
    """Dumps keys in the order the data gave them (declared fields would otherwise come first), and only the keys
    that were given: an optional field nobody wrote stays out of the file, as it did before these models."""

    _order: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler):
        model = handler(data)
        if isinstance(data, dict):
            model._order = list(data)
        return model

    @model_serializer(mode="wrap")
    def _given_order(self, handler) -> dict[str, Any]:
        dumped = handler(self)
        given = set(self.model_fields_set) | set(self.__pydantic_extra__ or {})
        dumped = {k: v for k, v in dumped.items() if k in given}
        return {**{k: dumped[k] for k in self._order if k in dumped}, **dumped}


class EntityScores(BaseModel):
    """One entity type's scores (token classification, from seqeval's report)."""

    model_config = ConfigDict(extra="forbid")
    precision: float
    """Share of the predicted entities of this type that are right."""
    recall: float
    """Share of the gold entities of this type that were found."""
    f1: float
    """Harmonic mean of precision and recall."""
    support: int
    """Gold entities of this type."""


class SplitMetrics(_Ordered):
    """One split's evaluation. Numbers that vary by task are extras (`scores()` lists them); the rest is declared."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float | None] = Field(init=False)  # task scores: a number, or None if undefined

    rows: int
    """Rows evaluated."""
    loss: float | None = None
    """Mean loss (per row for classification, per response token for generative tasks); absent where no row
    carries a response to score it on."""
    confusion_matrix: list[list[int]] | None = None
    """Classification: rows are the true label, columns the predicted one, in label-set order."""
    per_type: dict[str, EntityScores] | None = None
    """Token classification: scores per entity type."""
    correct: int | None = None
    """Instruction tasks: rows whose extracted answer matches the gold one."""
    no_answer: int | None = None
    """Instruction tasks: rows where no answer could be extracted."""
    answer_type: str | None = None
    """Instruction tasks: how answers were read (number, letter, keyword, text)."""
    bleu_signature: str | None = None
    """Translation: sacrebleu's signature of the BLEU score (version, tokeniser, smoothing)."""
    chrf_signature: str | None = None
    """Translation: sacrebleu's signature of the chrF score."""
    ter_signature: str | None = None
    """Translation: sacrebleu's signature of the TER score."""
    predictions_file: str | None = None
    """Where the rows' predictions are, relative to the run directory (predictions/<split>.jsonl)."""

    COUNTS: ClassVar[frozenset[str]] = frozenset({"rows", "correct", "no_answer"})  # numbers that are counts, not scores

    def scores(self) -> dict[str, float | None]:
        """The split's scores in the file's order: every number but the counts (loss included: it ranks too)."""
        return {k: v for k, v in self.model_dump().items()
                if k not in self.COUNTS and (v is None or isinstance(v, (int, float))) and not isinstance(v, bool)}


class Evaluation(SplitMetrics):
    """A later evaluation of the finished run (`lmtune eval`, a benchmark suite), appended under `evaluations`."""

    split: str
    """What was evaluated: a split name, or `<suite>/<set>`."""
    source: str
    """The data evaluated: a split name or a file."""
    at: str
    """When, as local time with its offset (ISO 8601)."""
    scoring: str | None = None
    """A benchmark suite's set: how it was scored (`generation`: generate and extract the answer;
    `log-likelihood`: the likeliest of the set's options)."""


class RunMetrics(_Ordered):
    """What every finished run directory's metrics.json holds, training run or baseline."""

    model_config = ConfigDict(extra="forbid")

    eval_split: str
    """The headline split (test where there is one, else validation); its metrics are also at the top level."""
    splits: dict[str, SplitMetrics]
    """Every evaluated split's metrics, by split name."""
    trainable_params: int
    """Parameters that trained (for TF-IDF: the logistic regression's coefficients)."""
    total_params: int
    """Parameters of the whole model, trained or not."""
    trainable_percent: float
    """100 × trainable / total, rounded to 4 decimals (0 for a model with no parameters)."""
    artifact_bytes: int
    """Bytes of the files the run saved to rebuild its model."""
    train_seconds: float
    """Wall-clock seconds of training (0 for a baseline that does not train)."""
    peak_rss_mb: float
    """Peak resident memory of the process while training (or evaluating, for an untrained baseline), in MB."""
    method: str
    """The strategy's or baseline's name."""
    evaluations: list[Evaluation] = []
    """Evaluations made after the run finished (`lmtune eval`), oldest first."""

    @model_validator(mode="before")
    @classmethod
    def _headline_from_splits(cls, data: Any) -> Any:
        """Drop the flat copy of the headline split (it is `splits[eval_split]`, written back on dump); a copy that
        disagrees with it is a damaged file."""
        if not isinstance(data, dict) or not isinstance(data.get("splits"), dict):
            return data
        if data.get("eval_split") not in data["splits"]:
            raise ValueError(f"eval_split {data.get('eval_split')!r} is none of the splits {sorted(data['splits'])}")
        headline = data["splits"][data["eval_split"]]
        if not isinstance(headline, dict):
            return data  # a split of the wrong type: its field's own check says so
        # compared as JSON: NaN (a score left undefined) equals itself there, and nested values compare alike
        differ = [k for k in headline if k in data and json.dumps(data[k]) != json.dumps(headline[k])]
        if differ:
            raise ValueError(f"the top-level {', '.join(differ)} differ from splits.{data['eval_split']}")
        return {k: v for k, v in data.items() if k not in headline or k in cls.model_fields}

    @property
    def headline(self) -> SplitMetrics:
        return self.splits[self.eval_split]

    def to_json(self) -> dict[str, Any]:
        """The file's content: the headline split flat first, then this model's fields."""
        return {**self.headline.model_dump(), **self.model_dump()}


class TrainingMetrics(RunMetrics):
    """A run trained by `lmtune train` (the scratch baseline is one too)."""

    adapter_bytes: int
    """Bytes a server holds for this run: the strategy's serving form plus the task head."""
    global_step: int
    """Optimizer steps taken."""
    serve_kind: str
    """How the adapter is served (weight_delta, virtual_tokens, kv_prefix, head, full_model)."""
    truncated_train_rows: int | None = None
    """Generative tasks: training rows cut to model.max_length (None where not counted)."""
    dropped_train_rows: int | None = None
    """Generative tasks: training rows left out for lack of a response."""
    trained_with: str | None = None
    """The scratch baseline: the strategy that trained the random weights."""
    baseline: dict[str, Any] | None = None
    """The scratch baseline: its config."""


class BaselineMetrics(RunMetrics):
    """A baseline that does not train through the Trainer (TF-IDF, prompting)."""

    baseline: dict[str, Any]
    """The baseline's config."""
    details: dict[str, Any]
    """Facts about how it ran that are not metrics (verbalizers, truncated prompts, seconds spent evaluating)."""


def parse_metrics(data: dict[str, Any], where: str = "metrics.json") -> RunMetrics:
    """Typed metrics from a metrics.json's content: a training run's, or a baseline's."""
    kind = BaselineMetrics if "details" in data else TrainingMetrics
    try:
        return kind.model_validate(data)
    except ValueError as err:
        raise LmtuneError(f"{where} does not have the shape of a finished run's metrics: {err}") from None


def read_metrics(run_dir: str | Path) -> RunMetrics:
    path = Path(run_dir) / METRICS_FILE
    return parse_metrics(json.loads(path.read_text(encoding="utf-8")), str(path))


def write_metrics(run_dir: str | Path, metrics: RunMetrics) -> dict[str, Any]:
    """Write metrics.json atomically (last: its presence marks a finished run); returns what was written."""
    content = metrics.to_json()
    write_json(Path(run_dir) / METRICS_FILE, content)
    return content
