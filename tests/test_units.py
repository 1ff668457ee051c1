"""Small pieces checked against direct computations."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lmtune.evaluate.metrics import classification_metrics
from lmtune.io import write_json
from lmtune.models.pooling import pool


def test_mean_pooling_ignores_padding_and_leading_virtual_tokens():
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # two virtual tokens were prepended to a length-3 input
    pooled = pool(hidden, mask, "mean")
    torch.testing.assert_close(pooled[0], hidden[0, 2:5].mean(0))
    torch.testing.assert_close(pooled[1], hidden[1, 2:4].mean(0))


def test_last_token_pooling_for_right_and_left_padding():
    hidden = torch.randn(2, 4, 3)
    torch.testing.assert_close(pool(hidden, torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]]), "last"), torch.stack([hidden[0, 1], hidden[1, 3]]))
    torch.testing.assert_close(pool(hidden, torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1]]), "cls"), hidden[:, 0])


def test_binary_metrics_match_sklearn():
    labels = np.array([0, 1, 1, 0, 1])
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6], [0.1, 0.9]])
    m = classification_metrics(labels, probs, ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]))
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]


def test_multiclass_metrics_with_a_class_missing_from_the_split():
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.6, 0.1]])
    m = classification_metrics(labels, probs, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.75)
    # One-vs-rest over the two classes present, worked by hand. Class a: positives score 0.7, 0.2, negatives 0.1,
    # 0.3 -> AUC 3/4; ranked 0.7+, 0.3-, 0.2+, 0.1- -> AP 1/2 * 1 + 1/2 * 2/3 = 5/6. Class b: positives 0.8, 0.6
    # above both negatives -> AUC 1, AP 1. Macro: AUC 7/8, AP 11/12 (class c, absent, is left out).
    assert m["roc_auc"] == pytest.approx(7 / 8) and m["pr_auc"] == pytest.approx(11 / 12)
    assert len(m["confusion_matrix"]) == 3
    single = classification_metrics(np.array([0, 0]), probs[:2], ["a", "b", "c"])
    assert single["roc_auc"] is None, "undefined with one class present, not a crash"


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        from lmtune.io import atomic_write

        atomic_write(target, lambda tmp: (tmp.write_text("{partial"), (_ for _ in ()).throw(TypeError("boom"))))
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_quickstart_reviews_are_balanced_varied_and_disjoint():
    from lmtune.quickstart import DATA

    splits = {s: [json.loads(line) for line in (DATA / f"reviews_{s}.jsonl").read_text().splitlines()] for s in ("train", "test")}
    assert len(splits["train"]) + len(splits["test"]) >= 600
    for rows in splits.values():
        counts = {label: sum(r["label"] == label for r in rows) for label in ("positive", "neutral", "negative")}
        assert len(set(counts.values())) == 1, counts
    assert len({r["product"] for r in splits["train"]}) >= 10
    train_texts = {r["text"].lower() for r in splits["train"]}
    assert len(train_texts) == len(splits["train"]) and not train_texts & {r["text"].lower() for r in splits["test"]}


def test_served_bytes_count_the_serving_form_not_the_training_state(tiny_models, toy_data, tmp_path):
    from conftest import tiny_raw_config
    from lmtune.runconfig import resolve_config
    from lmtune.train import train

    method = {"name": "p_tuning", "num_virtual_tokens": 4, "encoder_hidden_size": 16}
    result = train(resolve_config(tiny_raw_config(tiny_models["bert"], toy_data, tmp_path, method, max_steps=1)))
    hidden = result.model.body.config.hidden_size
    head = (hidden * result.model.head.layers + 1) * 2 * 4  # a p-tuning head reads several layers
    assert result.metrics["adapter_bytes"] == 4 * hidden * 4 + head, "the encoder's output, 4 tokens × hidden, fp32"
    assert result.metrics["artifact_bytes"] > result.metrics["adapter_bytes"], "the run keeps the encoder to train further"
