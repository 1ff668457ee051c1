"""One rule for relative paths (the directory lmtune was run from) in train, compare, tune and pretrain; override
words such as `no` stay the strings the user typed, in every command that takes `a.b=c`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import tiny_raw_config
from lmtune.cli import main
from lmtune.compare.runner import load_compare_config
from lmtune.config.loading import parse_overrides
from lmtune.pretrain.config import load_pretrain_config
from lmtune.runconfig import load_config


@pytest.mark.parametrize("word", ["no", "off", "yes", "on", "No", "OFF"])
def test_yaml_11_boolean_words_stay_strings(word):
    assert parse_overrides([f"a.b={word}"]) == [(["a", "b"], word)]
    assert parse_overrides(["a=true", "b=False", "c=1.5", "d=[1, x]", "e=null"]) == [
        (["a"], True), (["b"], False), (["c"], 1.5), (["d"], [1, "x"]), (["e"], None)]


def test_string_fields_keep_the_word_in_every_command(tmp_path):
    assert load_config(None, ["train.eval_every=no", "output.name=off"]).train.eval_every == "no"
    assert load_config(None, ["output.name=off"]).output.name == "off"
    assert load_config(None, ["train.resume=yes", "train.progress=off"]).train.resume is True  # booleans still read
    from lmtune.tune.study import load_study_config

    study = load_study_config(None, ["base.train.eval_every=no", "budget.trials=1", "study_name=no"])
    assert study.base["train"]["eval_every"] == "no" and study.study_name == "no"
    assert load_compare_config(None, ["base.train.eval_every=no"]).base["train"]["eval_every"] == "no"
    corpus = tmp_path / "c.txt"
    corpus.write_text("text\n")
    cfg = load_pretrain_config("model", None, [f"corpus.files=[{corpus}]", "corpus.text_field=no"])
    assert cfg.corpus.text_field == "no"
    # and in a config file: `eval_every: no` is the word, not YAML 1.1's false
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  eval_every: no\n  resume: yes\n")
    cfg = load_config(path)
    assert cfg.train.eval_every == "no" and cfg.train.resume is True


def test_relative_paths_resolve_against_the_working_directory_in_every_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.train=d/train.jsonl", "data.validation=../v.jsonl", "train.init_from=runs/x"])
    assert cfg.data.train == str(tmp_path / "d" / "train.jsonl")
    assert cfg.data.validation == str(tmp_path.parent / "v.jsonl")
    assert cfg.train.init_from == str(tmp_path / "runs" / "x") and cfg.output.dir == str(tmp_path / "runs")
    # names that are not paths stay names: a bundled model, a hub id, hub split names
    cfg = load_config(None, ["model.name=smollm2", "data.hub=glue", "data.train=train"])
    assert cfg.model.name == "smollm2" and cfg.data.train == "train"
    assert load_config(None, ["model.name=HuggingFaceTB/SmolLM2-135M"]).model.name == "HuggingFaceTB/SmolLM2-135M"
    (tmp_path / "my-model").mkdir()
    assert load_config(None, ["model.name=my-model"]).model.name == str(tmp_path / "my-model")
    compare = load_compare_config(None, ["base.data.train=t.jsonl", "output.dir=cmp"])
    assert compare.base["data"]["train"] == str(tmp_path / "t.jsonl") and compare.output.dir == str(tmp_path / "cmp")
    (tmp_path / "corpus").mkdir()
    pre = load_pretrain_config("model", None, ["corpus.files=[corpus, 'texts/*.txt']", "output.dir=out"])
    assert pre.corpus.files == [str(tmp_path / "corpus"), str(tmp_path / "texts" / "*.txt")]
    assert pre.output.dir == str(tmp_path / "out") and pre.tokenizer.path is None
    from lmtune.tune.study import load_study_config

    study = load_study_config(None, ["base.data.train=t.jsonl", "output.dir=st", "budget.trials=1"])
    assert study.output.dir == str(tmp_path / "st") and study.base_dir == str(tmp_path)


def test_a_run_saves_absolute_paths_and_reruns_from_any_folder(tmp_path, tiny_models, toy_data, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    raw = tiny_raw_config(tiny_models["bert"], toy_data, tmp_path / "unused", {"name": "lora", "rank": 2},
                          max_steps=2, eval_every="no")
    raw["model"]["name"] = os.path.relpath(raw["model"]["name"], project)
    raw["data"] = {k: os.path.relpath(v, project) for k, v in raw["data"].items()}
    raw["output"] = {"dir": "runs"}
    (project / "run.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", "run.yaml"]) == 0
    saved = yaml.safe_load((project / "runs" / "lora" / "config.yaml").read_text())
    assert saved["data"]["train"] == str(toy_data["train"]) and saved["model"]["name"] == str(tiny_models["bert"])
    monkeypatch.chdir(tmp_path)  # elsewhere: the saved config still finds its model and data
    assert main(["train", str(project / "runs" / "lora" / "config.yaml"), "output.name=again"]) == 0
    first, again = (json.loads((project / "runs" / name / "metrics.json").read_text()) for name in ("lora", "again"))
    assert again["loss"] == pytest.approx(first["loss"], abs=1e-6)
    assert Path(project / "runs" / "again").is_dir() and not (tmp_path / "runs").exists()
