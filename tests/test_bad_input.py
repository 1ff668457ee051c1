"""Bad input stops with a message naming the problem and the fix, before any long work starts."""

import json

import pytest
from transformers import TrainerCallback

from conftest import tiny_raw_config, toy_rows, write_jsonl
from lmtune.errors import LmtuneError
from lmtune.runconfig import resolve_config
from lmtune.train import train
from lmtune.train.artifacts import load_run


def _run(tiny_models, toy_data, tmp_path, arch="bert", **changes):
    raw = tiny_raw_config(tiny_models[arch], toy_data, tmp_path / "runs", {"name": "lora", "rank": 2}, max_steps=2)
    for section, values in changes.items():
        raw[section].update(values)
    watch = TrainingStarted()
    try:
        return train(resolve_config(raw), callbacks=[watch])
    except LmtuneError:
        assert not watch.started, "the error must come before long work"
        raise


class TrainingStarted(TrainerCallback):
    """Records whether the Trainer began training: a refusal must come before it (no timings in tests)."""

    def __init__(self):
        self.started = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = True


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"data": {"train": "missing.jsonl"}}, "does not exist"),
        ({"data": {"text_column": "review"}}, "no column 'review'"),
        ({"data": {"label_column": "stars"}}, "no label column 'stars'"),
        ({"data": {"labels": ["pos", "neutral"]}}, "labels outside the label set"),
        ({"model": {"name": "/no/such/model"}}, "neither a model folder"),
        ({"model": {"name": "some-org/some-model"}}, "Offline, use a bundled name or a local folder"),
    ],
)
def test_bad_data_and_model_paths(tiny_models, toy_data, tmp_path, changes, message):
    with pytest.raises(LmtuneError, match=message):
        _run(tiny_models, toy_data, tmp_path, **changes)


def test_validation_label_outside_the_label_set(tiny_models, toy_data, tmp_path):
    rows = toy_rows(8) + [{"text": "so so", "label": "meh"}]
    bad = write_jsonl(tmp_path / "val.jsonl", rows)
    with pytest.raises(LmtuneError, match=r"validation data has labels outside.*'meh' \(1 rows\)"):
        _run(tiny_models, toy_data, tmp_path, data={"validation": str(bad)})


def test_empty_and_one_class_data(tiny_models, toy_data, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(LmtuneError, match="data file .*empty.jsonl is empty"):
        _run(tiny_models, toy_data, tmp_path, data={"train": str(empty)})
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(LmtuneError, match="header.csv has no rows"):
        _run(tiny_models, toy_data, tmp_path, data={"train": str(header_only)})
    one_class = write_jsonl(tmp_path / "one.jsonl", [r for r in toy_rows(20) if r["label"] == "pos"])
    with pytest.raises(LmtuneError, match="only one class"):
        _run(tiny_models, toy_data, tmp_path, data={"train": str(one_class)})


def test_a_folder_or_gguf_that_is_not_a_model(tiny_models, toy_data, tmp_path):
    not_model = tmp_path / "folder"
    not_model.mkdir()
    (not_model / "notes.txt").write_text("hello")
    with pytest.raises(LmtuneError, match="not a model folder"):
        _run(tiny_models, toy_data, tmp_path, model={"name": str(not_model)})
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF but not really")
    with pytest.raises(LmtuneError, match="not a GGUF model"):
        _run(tiny_models, toy_data, tmp_path, model={"name": str(fake)})


def test_an_adapter_trained_for_another_base_model_is_refused(tiny_models, toy_data, tmp_path):
    from lmtune.models.tiny import build_tiny_model

    result = _run(tiny_models, toy_data, tmp_path)
    texts = [json.loads(line)["text"] for line in toy_data["train"].read_text().splitlines()]
    other = build_tiny_model("bert", tmp_path / "other-bert", texts, seed=7)  # same shapes, other weights
    with pytest.raises(LmtuneError, match="was trained on base model .* different weights"):
        load_run(result.run_dir, [f"model.name={other}"])


def test_existing_runs_are_not_clobbered(tiny_models, toy_data, tmp_path):
    _run(tiny_models, toy_data, tmp_path)
    with pytest.raises(LmtuneError, match="holds a finished run"):
        _run(tiny_models, toy_data, tmp_path)
    assert _run(tiny_models, toy_data, tmp_path, output={"overwrite": True}).metrics["global_step"] == 2


def test_resume_refuses_a_changed_config(tiny_models, toy_data, tmp_path):
    run_dir = tmp_path / "runs" / "lora"
    run_dir.mkdir(parents=True)
    raw = tiny_raw_config(tiny_models["bert"], toy_data, tmp_path / "runs", {"name": "lora", "rank": 2}, max_steps=2)
    from lmtune.io import write_yaml

    write_yaml(run_dir / "config.yaml", resolve_config(raw).model_dump(mode="json"))
    raw["method"]["rank"] = 8
    raw["train"]["resume"] = True
    with pytest.raises(LmtuneError, match=r"method.rank: 2 → 8"):
        train(resolve_config(raw))
