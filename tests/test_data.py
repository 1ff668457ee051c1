"""Real files through `datasets`: TSV with a BOM and lone quotes, text pairs, seeded stratified validation splits."""

from collections import Counter

import pytest

from conftest import SHARED_DATA, tiny_raw_config, toy_rows, write_jsonl
from lmtune.runconfig import build_task, resolve_config
from lmtune.train import train

MRPC = SHARED_DATA / "glue_mrpc"


@pytest.mark.skipif(not (MRPC / "train.tsv").is_file(), reason="needs ../shared/data/glue_mrpc")
def test_text_pairs_from_mrpc_tsv(tiny_models, toy_data, tmp_path):
    raw = tiny_raw_config(tiny_models["bert"], toy_data, tmp_path, {"name": "lora", "rank": 2}, max_steps=2)
    raw["data"] = {"train": str(MRPC / "train.tsv"), "validation": str(MRPC / "dev.tsv"), "text_column": "#1 String",
                   "text_pair_column": "#2 String", "label_column": "Quality", "max_train_samples": 64, "max_eval_samples": 16}
    cfg = resolve_config(raw)
    task = build_task(cfg)
    splits = task.load_data()
    assert "Quality" in splits.train.column_names, "the BOM is stripped from the first header"
    assert task.cfg.data.labels == ["0", "1"]
    assert any('"' in t for t in MRPC.joinpath("train.tsv").read_text(encoding="utf-8-sig").splitlines()[1:50])
    first = splits.train[0]
    from lmtune.models.loading import load_tokenizer

    encoded = task.encode(splits.train.select([0]), load_tokenizer(tiny_models["bert"]))[0]
    assert 1 in encoded["token_type_ids"], "the second text is its own segment"
    assert first["#1 String"] and first["#2 String"]
    result = train(cfg)
    assert result.metrics["rows"] == 16 and result.metrics["global_step"] == 2


def test_validation_split_is_seeded_and_stratified(tiny_models, tmp_path):
    rows = toy_rows(60) + [{"text": "it was fine", "label": "mid"} for _ in range(20)]
    data = {"train": write_jsonl(tmp_path / "train.jsonl", rows), "validation": None}
    raw = tiny_raw_config(tiny_models["bert"], data, tmp_path, {"name": "freeze"})
    del raw["data"]["validation"]
    raw["data"]["validation_fraction"] = 0.25

    def validation():
        return build_task(resolve_config(raw)).load_data().validation

    first, second = validation(), validation()
    assert first["text"] == second["text"], "same seed, same split"
    assert Counter(first["label"]) == {"pos": 8, "neg": 7, "mid": 5} or Counter(first["label"]) == {"pos": 7, "neg": 8, "mid": 5}
    raw["train"]["seed"] = 7
    assert validation()["text"] != first["text"]


def test_early_stopping_stops_when_the_metric_stalls(tiny_models, toy_data, tmp_path):
    raw = tiny_raw_config(tiny_models["bert"], toy_data, tmp_path, {"name": "freeze"}, max_steps=40, eval_every="steps",
                          eval_steps=2, early_stopping_patience=2, learning_rate=1e-12,
                          head_learning_rate=1e-12, head_fit="trainer")  # Trainer's early stopping
    raw["eval"] = {"metric": "loss"}
    result = train(resolve_config(raw))
    assert result.metrics["global_step"] < 40


def test_the_head_trains_at_its_own_learning_rate(tiny_models, toy_data, tmp_path):
    from transformers import TrainerCallback

    seen = {}

    class Groups(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            head = {id(p) for p in model.head.parameters()}
            for group in optimizer.param_groups:
                kinds = {id(p) in head for p in group["params"]}
                assert len(kinds) == 1, "a group holds head or body parameters, never both"
                seen.setdefault(kinds.pop(), set()).add(group["lr"])

    raw = tiny_raw_config(tiny_models["bert"], toy_data, tmp_path, {"name": "lora", "rank": 2}, max_steps=1,
                          learning_rate=1e-3, warmup_ratio=0.0)
    result = train(resolve_config(raw), callbacks=[Groups()])
    assert seen == {True: {5e-3}, False: {1e-3}}, "default head rate: the larger of the body's and 5e-3"
    assert result.config.train.head_learning_rate == 5e-3, "the resolved rate is saved with the run"
