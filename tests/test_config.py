"""YAML + overrides → typed config; typos get suggestions; strategies bring their own config sections."""

import pytest
import yaml

from conftest import ROOT
from lmtune.config.loading import parse_overrides
from lmtune.errors import LmtuneError
from lmtune.methods.lora import LoraMethodConfig
from lmtune.runconfig import load_config, resolve_config


def test_yaml_plus_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"method": {"name": "lora", "rank": 4}, "train": {"epochs": 2}}))
    cfg = load_config(path, ["method.rank=16", "train.learning_rate=3e-4", "data.labels=[neg, pos]"])
    assert isinstance(cfg.method, LoraMethodConfig)
    assert cfg.method.rank == 16 and cfg.train.epochs == 2
    assert cfg.train.learning_rate == pytest.approx(3e-4)
    assert cfg.data.labels == ["neg", "pos"]


def test_the_default_method_is_lora_with_its_options():
    from lmtune.runconfig import RunConfig

    for cfg in (resolve_config({}), RunConfig(), resolve_config({"method": {}})):
        assert isinstance(cfg.method, LoraMethodConfig) and cfg.method.rank == 8


def test_switching_strategy_by_override_validates_against_the_new_strategy():
    cfg = resolve_config({}, ["method.name=p_tuning", "method.encoder=lstm"])
    assert cfg.method.name == "p_tuning" and cfg.method.encoder == "lstm"
    with pytest.raises(LmtuneError, match="method.encoder: unknown key"):
        resolve_config({}, ["method.name=lora", "method.encoder=lstm"])


@pytest.mark.parametrize(
    "override,message",
    [
        (["trian.epochs=3"], "did you mean 'train'"),
        (["method.rnak=4"], "did you mean 'rank'"),
        (["train.learnig_rate=1e-3"], "did you mean 'learning_rate'"),
        (["method.name=lroa"], "did you mean 'lora'"),
        (["method.name=peft", "method.peft_type=ia4"], "did you mean 'IA3'"),
        (["method.name=peft", "method.options={rr: 4}"], "has no option 'rr'"),
        (["train.epochs=many"], "train.epochs"),
        (["method.rank=-1"], "greater than 0"),
        (["model.pooling=max"], "model.pooling"),
        (["method.name=prompt_tuning", "method.init=text"], "needs method.init_text"),
        (["task.name=instructon"], "did you mean 'instruction'"),
        (["task.name=instruction", "task.tempalte=chat"], "did you mean 'template'"),
        (["task.name=translation", "task.generation.max_new_token=9"], "did you mean 'max_new_tokens'"),
        (["task.name=classification", "task.answer_type=number"], "unknown key"),
    ],
)
def test_bad_config_names_the_problem_and_the_fix(override, message):
    with pytest.raises(LmtuneError, match=message):
        resolve_config({}, override)


def test_override_syntax_errors():
    with pytest.raises(LmtuneError, match="key.path=value"):
        parse_overrides(["train.epochs"])
    with pytest.raises(LmtuneError, match="is a value, not a section"):
        resolve_config({}, ["train.epochs=3", "train.epochs.x=1"])


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(LmtuneError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(LmtuneError, match="not valid YAML"):
        load_config(bad)


def test_every_config_field_is_documented():
    from lmtune.config.schema import GenerationConfig, StrictModel
    from lmtune.methods import STRATEGIES
    from lmtune.runconfig import RunConfig
    from lmtune.tasks import TASKS

    classes = {RunConfig, GenerationConfig} | {cls.config_cls for cls in STRATEGIES.all().values()}
    classes |= {cls.config_cls for cls in TASKS.all().values()}
    classes |= {f.annotation for f in RunConfig.model_fields.values() if isinstance(f.annotation, type)}
    for cls in classes:
        if isinstance(cls, type) and issubclass(cls, StrictModel):
            for name, field in cls.model_fields.items():
                assert field.description, f"{cls.__name__}.{name} has no docstring"


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_example_configs_resolve(example):
    raw = yaml.safe_load(example.read_text())
    if "corpus" in raw:  # a pretrain config: its command is the one whose config accepts it
        from lmtune.pretrain.config import COMMAND_CONFIGS, load_pretrain_config

        command = "tokenizer" if "tokenizer" in example.stem else "continue" if "continue" in example.stem else "model"
        assert command in COMMAND_CONFIGS and load_pretrain_config(command, example, [])
        return
    if "space" in raw:  # a tune study
        from lmtune.tune.study import load_study_config

        assert load_study_config(example, []).space
        return
    if "base" in raw:  # a compare config
        from lmtune.compare.config import expand
        from lmtune.compare.runner import load_compare_config

        assert len(expand(load_compare_config(example, []))) > 1
        return
    cfg = load_config(example)
    assert cfg.output.name and cfg.data.train


def test_task_defaults_resolve_into_the_config():
    from lmtune.runconfig import resolve

    for name, length, metric in (("classification", 128, "accuracy"), ("instruction", 256, "loss"),
                                 ("token_classification", 128, "f1")):
        # Label tasks read their label set from the training data unless it is given.
        cfg = resolve(resolve_config({"task": {"name": name}, "data": {"labels": ["O", "B-X"]}}))
        assert (cfg.model.max_length, cfg.eval.metric) == (length, metric)
    cfg = resolve_config({"task": {"name": "instruction"}, "eval": {"metric": "accuracy"}})
    with pytest.raises(LmtuneError, match="cannot pick checkpoints"):
        resolve(cfg)


def test_overrides_never_write_into_the_callers_config():
    """Compare hands every entry the same `base`: one entry's `model.init=random` must not reach the next."""
    from lmtune.config.loading import apply_overrides

    base = {"model": {"name": "minilm", "init": "pretrained"}, "train": {"learning_rate": 1e-4}}
    changed = apply_overrides(base, ["model.init=random", "train.learning_rate=0.1"])
    assert changed["model"]["init"] == "random" and changed["train"]["learning_rate"] == 0.1
    assert base == {"model": {"name": "minilm", "init": "pretrained"}, "train": {"learning_rate": 1e-4}}
