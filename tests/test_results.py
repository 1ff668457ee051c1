"""metrics.json as a typed contract (lmtune.results): what writes it must give every field, what reads it gets
typed values, and the file keeps the shape it always had."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from conftest import tiny_raw_config
from lmtune.errors import LmtuneError
from lmtune.results import BaselineMetrics, TrainingMetrics, parse_metrics, read_metrics, write_metrics
from lmtune.runconfig import resolve_config
from lmtune.train import train

HEADLINE = {"accuracy": 0.5, "macro_f1": 0.4, "roc_auc": None, "pr_auc": None, "confusion_matrix": [[1, 1], [1, 1]],
            "loss": 0.69, "rows": 4}
RUN = {"trainable_params": 10, "total_params": 100, "trainable_percent": 10.0, "artifact_bytes": 40,
       "adapter_bytes": 40, "train_seconds": 1.25, "peak_rss_mb": 300.5, "global_step": 2, "method": "lora",
       "serve_kind": "weight_delta"}


def old_shape(headline: dict, **run) -> dict:
    """A metrics.json as lmtune wrote it before the typed models: the headline split flat, then the splits."""
    return {**headline, "eval_split": "test", "splits": {"validation": {"rows": 3, "loss": 0.7}, "test": headline},
            **RUN, **run}


def test_a_real_run_writes_a_file_that_reads_back_typed_and_unchanged(tiny_models, toy_data, tmp_path):
    result = train(resolve_config(tiny_raw_config(tiny_models["llama"], toy_data, tmp_path, {"name": "lora"}, max_steps=2)))
    text = (result.run_dir / "metrics.json").read_text()
    metrics = read_metrics(result.run_dir)
    assert isinstance(metrics, TrainingMetrics) and metrics.global_step == 2 and metrics.method == "lora"
    assert metrics.headline is metrics.splits["validation"] and metrics.eval_split == "validation"
    on_disk = json.loads(text)
    assert metrics.headline.scores() == {k: on_disk[k] for k in ("accuracy", "macro_f1", "roc_auc", "pr_auc", "loss")}
    write_metrics(tmp_path / "again", metrics)
    assert (tmp_path / "again" / "metrics.json").read_text() == text  # same keys, values and order


def test_an_old_file_with_task_scores_and_later_evaluations_round_trips(tmp_path):
    data = old_shape({**HEADLINE, "accuracy": math.nan}, truncated_train_rows=3, dropped_train_rows=0)
    data["evaluations"] = [{"split": "test", "source": "test", "at": "2026-12-01T10:00:00+0000", **HEADLINE}]
    (tmp_path / "metrics.json").write_text(json.dumps(data, indent=2) + "\n")
    metrics = read_metrics(tmp_path)
    assert metrics.truncated_train_rows == 3 and metrics.evaluations[0].source == "test"
    assert write_metrics(tmp_path / "copy", metrics) is not None
    assert (tmp_path / "copy" / "metrics.json").read_text() == (tmp_path / "metrics.json").read_text()


def test_a_misspelt_or_missing_field_fails_when_written():
    with pytest.raises(ValidationError, match="trainable_parms"):
        TrainingMetrics(**{**old_shape(HEADLINE), "trainable_parms": 10})
    without_step = {k: v for k, v in old_shape(HEADLINE).items() if k != "global_step"}
    with pytest.raises(ValidationError, match="global_step"):
        TrainingMetrics(**without_step)


def test_a_score_must_be_a_number_and_the_headline_a_split():
    with pytest.raises(LmtuneError, match="accuracy"):
        parse_metrics(old_shape({**HEADLINE, "accuracy": "high"}))
    with pytest.raises(LmtuneError, match="eval_split"):
        parse_metrics({**old_shape(HEADLINE), "eval_split": "dev"})


def test_a_flat_headline_that_disagrees_with_its_split_is_a_damaged_file():
    damaged = {**old_shape(HEADLINE), "accuracy": 0.9}
    with pytest.raises(LmtuneError, match="accuracy differ"):
        parse_metrics(damaged)


def test_a_baseline_file_reads_as_a_baseline_and_counts_are_not_scores():
    generative = {"rows": 5, "loss": 1.5, "accuracy": 0.4, "correct": 2, "no_answer": 1, "answer_type": "number",
                  "predictions_file": "predictions/test.jsonl"}
    data = {k: v for k, v in old_shape(generative).items() if k not in ("adapter_bytes", "global_step", "serve_kind")}
    metrics = parse_metrics({**data, "method": "prompting", "baseline": {"name": "prompting"}, "details": {"shots": 0}})
    assert isinstance(metrics, BaselineMetrics) and metrics.details == {"shots": 0}
    assert metrics.headline.scores() == {"loss": 1.5, "accuracy": 0.4}
    assert metrics.headline.correct == 2 and metrics.headline.answer_type == "number"
