"""A head on a frozen body fitted on cached features; the best checkpoint kept; quiet output off a terminal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_raw_config, toy_rows, write_jsonl
from lmtune.evaluate.evaluator import evaluate_split
from lmtune.models.loading import load_backbone
from lmtune.runconfig import build_task, resolve, resolve_config
from lmtune.train import train
from lmtune.train.artifacts import load_run
from lmtune.train.features import cached_features, compute_features
from lmtune.train.head_fit import L2_GRID


@pytest.fixture(scope="module")
def head_run(tiny_models, toy_data, tmp_path_factory):
    raw = tiny_raw_config(tiny_models["bert"], toy_data, tmp_path_factory.mktemp("head-fit"), {"name": "freeze"})
    return train(resolve_config(raw))


def test_the_cached_feature_head_predicts_what_the_full_model_predicts(head_run):
    """The head fitted on cached features, reloaded from the run as predict/eval/serve load it, gives through the
    full model the logits it gives on the cached features."""
    loaded = load_run(head_run.run_dir)
    task, model = loaded.task, loaded.model
    encoded = task.encode(task.load_data().validation, model.tokenizer)
    collator = task.collator(model.tokenizer)
    model.eval()
    with torch.no_grad():
        from_cache = model.head.classify(load_file(str(head_run.run_dir / "features" / "validation.safetensors"))["features"])
        through_model = torch.cat([model(**collator([encoded[i] for i in range(s, min(s + 7, len(encoded)))])).logits
                                   for s in range(0, len(encoded), 7)])  # other batches: other padding
    torch.testing.assert_close(from_cache, through_model, rtol=1e-4, atol=1e-5)
    full = evaluate_split(model, task, task.load_data().validation)
    assert full["accuracy"] == float(np.mean(from_cache.argmax(-1).numpy() == np.array(encoded["labels"])))


def test_the_head_fit_keeps_the_penalty_with_the_lowest_validation_loss(head_run):
    log = [json.loads(line) for line in (head_run.run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [entry["l2"] for entry in log] == list(L2_GRID)
    best = min(log, key=lambda e: e["eval_loss"])
    assert head_run.metrics["splits"]["validation"]["accuracy"] == pytest.approx(best["eval_accuracy"])
    assert head_run.metrics["splits"]["validation"]["loss"] == pytest.approx(best["eval_loss"], rel=1e-4)
    assert head_run.metrics["global_step"] == sum(e["lbfgs_iterations"] for e in log) > len(L2_GRID)


def test_a_changed_base_or_changed_data_never_reuses_the_cache(tiny_models, toy_data, tmp_path):
    raw = tiny_raw_config(tiny_models["bert"], toy_data, tmp_path, {"name": "freeze"})
    cfg = resolve(resolve_config(raw))
    task = build_task(cfg)
    splits = task.load_data()

    def features(model_cfg, table, seed=0):
        model = task.build_model(load_backbone(model_cfg, task.backbone_class, seed))
        encoded = task.encode(table, model.tokenizer)
        return cached_features(model, encoded, task.collator(model.tokenizer), 16, tmp_path / "cache", "train")

    first, reused = features(cfg.model, splits.train)
    assert not reused
    again, reused = features(cfg.model, splits.train)
    assert reused and torch.equal(again, first)
    other_rows, reused = features(cfg.model, splits.train.select(range(len(splits.train) - 1)))
    assert not reused and len(other_rows) == len(first) - 1
    longer = cfg.updated({"model.max_length": 4})  # what max_length cuts changes the features
    _, reused = features(longer.model, splits.train)
    assert not reused
    random_base = cfg.updated({"model.init": "random"})  # same shapes, other weights (another weights hash)
    other_base, reused = features(random_base.model, splits.train, seed=3)
    assert not reused and not torch.allclose(other_base, first)
    back, reused = features(cfg.model, splits.train)
    assert not reused and torch.allclose(back, first), "the file now held the random base's features"
    top_task = build_task(cfg.updated({"model.pooling_layers": 1}))  # a head that reads other layers
    top_model = top_task.build_model(load_backbone(cfg.model, task.backbone_class, 0))
    encoded = top_task.encode(splits.train, top_model.tokenizer)
    top_only, reused = cached_features(top_model, encoded, top_task.collator(top_model.tokenizer), 16,
                                       tmp_path / "cache", "train")
    assert not reused and top_only.size(-1) < first.size(-1)


def test_a_head_on_a_frozen_body_reads_the_last_layers_and_a_trained_body_the_top(tiny_models, toy_data, tmp_path):
    def resolved(method, **model):
        raw = tiny_raw_config(tiny_models["bert"], toy_data, tmp_path, method)
        raw["model"] = {**raw["model"], **model}
        return resolve(resolve_config(raw))

    assert resolved({"name": "freeze"}).model.pooling_layers == 4
    assert resolved({"name": "freeze", "train_last_layers": 1}).model.pooling_layers == 1
    assert resolved({"name": "lora"}).model.pooling_layers == 1
    assert resolved({"name": "p_tuning"}).model.pooling_layers == 4, "prompt methods leave the body frozen too"
    assert resolved({"name": "lora"}, pooling_layers=2).model.pooling_layers == 2, "the user's setting is kept"
    assert resolved({"name": "freeze"}, pooling_layers=1).model.pooling_layers == 1


def test_the_pooled_features_are_each_layer_pooled_and_concatenated(head_run):
    """The reference: every hidden layer pooled on its own by hand (mean over the real tokens), the last ones
    concatenated; the tiny model's 2 blocks give 3 layers with the embeddings, so a default of 4 reads all 3."""
    loaded = load_run(head_run.run_dir)
    task, model = loaded.task, loaded.model
    layers = model.body.config.num_hidden_layers + 1
    assert loaded.config.model.pooling_layers == 4 and model.head.layers == layers
    encoded = task.encode(task.load_data().validation.select(range(6)), model.tokenizer)
    batch = task.collator(model.tokenizer)([encoded[i] for i in range(6)])
    with torch.no_grad():
        got = model.features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        states = model.body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].bool()
    expected = torch.stack([torch.cat([h[row][mask[row]].mean(0) for h in states[-layers:]]) for row in range(6)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_a_run_saved_before_pooling_layers_existed_reads_the_top_layer(head_run, tmp_path):
    import shutil

    import yaml

    old = tmp_path / "old-run"
    shutil.copytree(head_run.run_dir, old)
    saved = yaml.safe_load((old / "config.yaml").read_text())
    del saved["model"]["pooling_layers"]
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    from lmtune.train.rundir import load_run_config

    assert load_run_config(old).model.pooling_layers == 1


def test_compute_features_is_what_the_model_pools(head_run):
    loaded = load_run(head_run.run_dir)
    task, model = loaded.task, loaded.model
    encoded = task.encode(task.load_data().validation.select(range(5)), model.tokenizer)
    batch = task.collator(model.tokenizer)([encoded[i] for i in range(5)])
    with torch.no_grad():
        expected = model.features(**{k: v for k, v in batch.items() if k != "labels"})
    torch.testing.assert_close(compute_features(model, encoded, task.collator(model.tokenizer), 2), expected,
                               rtol=1e-5, atol=1e-6)


def test_class_weights_move_the_head_towards_the_rare_label():
    from lmtune.tasks.classification import ClassificationHead
    from lmtune.train.head_fit import _class_weights, _lbfgs

    generator = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 90 + [1] * 10)
    x = torch.randn(100, 8, generator=generator) + y[:, None] * 0.4  # overlapping clusters, 9:1
    test_x = torch.randn(200, 8, generator=generator) + torch.tensor([0, 1] * 100)[:, None] * 0.4

    def rare_predictions(weight) -> int:
        torch.manual_seed(0)
        head = ClassificationHead(8, 2, "mean").eval()
        _lbfgs(head, x, y, 1e-3, weight)
        with torch.no_grad():
            return int((head.classify(test_x).argmax(-1) == 1).sum())

    weights = _class_weights(ClassificationHead(8, 2, "mean"), x, y)
    torch.testing.assert_close(weights, torch.tensor([100 / 180, 100 / 20]))
    assert rare_predictions(weights) > rare_predictions(None) + 20


def test_the_best_checkpoint_is_the_one_kept(tiny_models, toy_data, tmp_path):
    # Validation labels flipped: the better training gets, the worse validation does, so the best is not the last.
    flipped = [{**row, "label": "neg" if row["label"] == "pos" else "pos"} for row in toy_rows(32, seed=2)]
    data = {"train": toy_data["train"], "validation": write_jsonl(tmp_path / "flipped.jsonl", flipped)}
    raw = tiny_raw_config(tiny_models["bert"], data, tmp_path, {"name": "lora", "rank": 4}, max_steps=12,
                          eval_every="steps", eval_steps=2, learning_rate=2e-2, keep_checkpoints=True,
                          save_total_limit=1)
    raw["eval"] = {"metric": "loss"}  # a metric that (almost) never ties
    result = train(resolve_config(raw))
    log = [json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text().splitlines()]
    evaluations = [(e["eval_loss"], e["step"]) for e in log if "eval_loss" in e]
    best_loss, best_step = min(evaluations)
    assert best_step != evaluations[-1][1], "this set-up should peak before the end; the test needs that"
    kept = load_file(str(result.run_dir / "checkpoints" / f"checkpoint-{best_step}" / "model.safetensors"))
    final = result.model.trainable_state_dict()
    for name, tensor in kept.items():
        torch.testing.assert_close(final[name], tensor)
    assert result.metrics["splits"]["validation"]["loss"] == pytest.approx(best_loss, rel=1e-4)


def test_output_into_a_file_has_one_line_per_epoch(tiny_models, toy_data, tmp_path, capfd):
    raw = tiny_raw_config(tiny_models["bert"], toy_data, tmp_path, {"name": "lora", "rank": 4}, epochs=3)
    raw["train"]["progress"] = None  # decided by the terminal; pytest's capture is a file
    train(resolve_config(raw))
    out, err = capfd.readouterr()
    text = out + err
    assert "\r" not in text, "no progress-bar redraws"
    assert "{'" not in text, "no raw Trainer dicts"
    epoch_lines = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
    assert "validation accuracy" in epoch_lines[0]
    assert any(line.startswith("trained 18 steps") for line in text.splitlines())


def test_p_tuning_starts_from_an_instruction_naming_the_labels(tiny_models, toy_data, tmp_path):
    cfg = resolve(resolve_config(tiny_raw_config(tiny_models["bert"], toy_data, tmp_path, {"name": "p_tuning"})))
    assert cfg.method.init_text == "Classify the text as neg or pos."
    given = {"name": "p_tuning", "init_text": "Is it good?"}
    assert resolve(resolve_config(tiny_raw_config(tiny_models["bert"], toy_data, tmp_path, given))).method.init_text == "Is it good?"
