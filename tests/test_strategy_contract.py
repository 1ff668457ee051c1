"""The contract every registered strategy keeps, on every tiny architecture (test ids carry the strategy name,
so `pytest -k lora` runs LoRA's rows)."""

from __future__ import annotations

import functools

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from conftest import tiny_raw_config
from lmtune.device import to_model_device
from lmtune.errors import LmtuneError
from lmtune.evaluate.evaluator import evaluate_split
from lmtune.forms import declared_peft_types, form_named, form_of_body
from lmtune.methods import STRATEGIES
from lmtune.models.loading import load_backbone
from lmtune.models.tiny import ARCHES
from lmtune.runconfig import build_task, resolve_config
from lmtune.train import runner, train
from lmtune.train.artifacts import load_run

# Every registered strategy, in the variants whose code paths differ. "base" says what trains besides the head:
# all / some pretrained weights, "none" (nothing in the body), or "adapter" (only new strategy parameters).
VARIANTS: dict[str, tuple[dict, str]] = {
    "full": ({"name": "full"}, "all"),
    "freeze-head": ({"name": "freeze"}, "none"),
    "freeze-last1": ({"name": "freeze", "train_last_layers": 1}, "some"),
    "lora": ({"name": "lora", "rank": 4}, "adapter"),
    "prompt_tuning-vocab": ({"name": "prompt_tuning", "num_virtual_tokens": 4}, "adapter"),
    "prompt_tuning-text": ({"name": "prompt_tuning", "num_virtual_tokens": 4, "init_text": "is this great or awful"}, "adapter"),
    "p_tuning-mlp-text": ({"name": "p_tuning", "num_virtual_tokens": 4, "encoder_hidden_size": 16, "init_text": "great or awful"}, "adapter"),
    "p_tuning-lstm": ({"name": "p_tuning", "num_virtual_tokens": 4, "encoder": "lstm", "encoder_hidden_size": 16}, "adapter"),
    "prefix_tuning": ({"name": "prefix_tuning", "num_virtual_tokens": 4}, "adapter"),
    "prefix_tuning-projection": ({"name": "prefix_tuning", "num_virtual_tokens": 4, "prefix_projection": True, "encoder_hidden_size": 16}, "adapter"),
    "bottleneck-series-attention": ({"name": "bottleneck", "bottleneck_size": 8, "placement": "attention"}, "adapter"),
    "bottleneck-series-mlp": ({"name": "bottleneck", "bottleneck_size": 8, "placement": "mlp"}, "adapter"),
    "bottleneck-series-both": ({"name": "bottleneck", "bottleneck_size": 8, "placement": "both"}, "adapter"),
    "bottleneck-parallel-attention": ({"name": "bottleneck", "bottleneck_size": 8, "kind": "parallel", "placement": "attention"}, "adapter"),
    "bottleneck-parallel-mlp": ({"name": "bottleneck", "bottleneck_size": 8, "kind": "parallel", "placement": "mlp"}, "adapter"),
    "bottleneck-parallel-both": ({"name": "bottleneck", "bottleneck_size": 8, "kind": "parallel", "placement": "both"}, "adapter"),
    "bottleneck-parallel-learned-scale": ({"name": "bottleneck", "bottleneck_size": 8, "kind": "parallel", "scaling": "learned"}, "adapter"),
    "bottleneck-series-gelu-dropout": ({"name": "bottleneck", "bottleneck_size": 8, "non_linearity": "gelu", "dropout": 0.1}, "adapter"),
    "peft-IA3": ({"name": "peft", "peft_type": "IA3"}, "adapter"),
    "peft-LOHA": ({"name": "peft", "peft_type": "LOHA", "options": {"r": 4, "target_modules": "all-linear"}}, "adapter"),
}
# Pairs PEFT itself cannot do (LoHa has no layer for GPT-2's Conv1D): lmtune must refuse them clearly.
UNSUPPORTED = {("peft-LOHA", "gpt2")}
CASES = [pytest.param(v, a, id=f"{v}-{a}") for v in VARIANTS for a in ARCHES if (v, a) not in UNSUPPORTED]


@pytest.mark.parametrize("variant,arch", sorted(UNSUPPORTED))
def test_unsupported_pairs_are_refused_clearly(tiny_models, toy_data, tmp_path, variant, arch):
    raw = tiny_raw_config(tiny_models[arch], toy_data, tmp_path, VARIANTS[variant][0], max_steps=1)
    with pytest.raises(LmtuneError, match="PEFT cannot apply"):
        train(resolve_config(raw))


def test_every_registered_strategy_is_in_the_matrix():
    covered = {method["name"] for method, _ in VARIANTS.values()}
    assert covered == set(STRATEGIES.all()), "add the new strategy to VARIANTS"


@pytest.fixture(scope="module")
def trained(tiny_models, toy_data, tmp_path_factory):
    """Train each (variant, arch) once per module; tests share the result."""
    out = tmp_path_factory.mktemp("contract-runs")

    @functools.cache
    def run(variant: str, arch: str):
        method, _ = VARIANTS[variant]
        # 40 steps: at 24, LoRA on the random tiny GPT-2 ends near its starting loss (~0.70, chance) and above it
        # for some dropout draws (seed 42 with train.fast_dropout's masks: 0.743 against 0.703); at 40 steps the
        # 8 seeds tried ended at 0.57-0.69.
        raw = tiny_raw_config(tiny_models[arch], toy_data, out, method, max_steps=40, learning_rate=2e-2,
                              eval_every="no", warmup_ratio=0.0)
        raw["output"]["name"] = f"{variant}-{arch}"
        cfg = resolve_config(raw)
        before: dict = {"pretrained": {}}

        def recording_loader(model_cfg, auto_class="AutoModel", seed=0):
            # The pretrained weights, by object identity: strategies wrap modules but keep these Parameters.
            backbone = load_backbone(model_cfg, auto_class, seed)
            before["pretrained"] = {id(p): (p, p.detach().clone()) for p in backbone.body.parameters()}
            return backbone

        fit = runner._fit

        def loss_before_fit(cfg, run_dir, task, model, *args):
            # Around the whole fit, Trainer's or the head fit's on cached features alike.
            before["loss"] = evaluate_split(model, _task_for_config(cfg), _train_table(cfg))["loss"]
            model.train()
            return fit(cfg, run_dir, task, model, *args)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(runner, "load_backbone", recording_loader)
            patch.setattr(runner, "_fit", loss_before_fit)
            result = train(cfg)
        return result, before

    return run


def _train_table(cfg):
    return build_task(cfg).load_data().train


@pytest.mark.parametrize("variant,arch", CASES)
def test_only_the_strategy_parameters_train(trained, variant, arch):
    result, before = trained(variant, arch)
    model = result.model
    assert all(p.requires_grad for p in model.head.parameters()), "the new task head always trains"
    pretrained = before["pretrained"]
    moved = [tuple(p.shape) for p, original in pretrained.values() if not p.requires_grad and not torch.equal(p.detach().cpu(), original.cpu())]
    assert not moved, "a frozen pretrained weight moved"
    trainable_pretrained = [p for p, _ in pretrained.values() if p.requires_grad]
    added = [p for p in model.body.parameters() if id(p) not in pretrained and p.requires_grad]
    _, base = VARIANTS[variant]
    if base == "all":
        assert len(trainable_pretrained) == len(pretrained)
    elif base == "some":
        assert 0 < len(trainable_pretrained) < len(pretrained)
    elif base == "none":
        assert not trainable_pretrained and not added, "only the head trains"
    else:
        assert not trainable_pretrained and added, "only the strategy's own new parameters train"
    counted = sum(p.numel() for p in trainable_pretrained + added) + sum(p.numel() for p in model.head.parameters())
    assert result.metrics["trainable_params"] == counted


@pytest.mark.parametrize("variant,arch", CASES)
def test_training_lowers_the_loss(trained, variant, arch):
    result, before = trained(variant, arch)
    after = evaluate_split(result.model, _task_for(result), _train_table(result.config))["loss"]
    assert after < before["loss"]


def _task_for(result):
    return _task_for_config(result.config)


def _task_for_config(cfg):
    task = build_task(cfg)
    task.load_data()
    return task


@pytest.mark.parametrize("variant,arch", CASES)
def test_save_then_load_gives_the_same_logits(trained, variant, arch):
    result, _ = trained(variant, arch)
    loaded = load_run(result.run_dir)
    batch = to_model_device(loaded.task.collator(loaded.model.tokenizer)(
        [loaded.task.encode(_train_table(result.config), loaded.model.tokenizer)[i] for i in range(8)]
    ), loaded.model)
    result.model.eval()
    with torch.no_grad():
        expected = result.model(**batch).logits
        got = loaded.model(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert loaded.strategy.serve_kind == result.metrics["serve_kind"]
    exported = loaded.strategy.export(loaded.model)
    assert all(isinstance(t, torch.Tensor) for t in exported.values())
    assert exported or loaded.strategy.serve_kind == "head", "only a lone head has nothing in the body to export"


@pytest.mark.parametrize("variant,arch", CASES)
def test_evaluation_sees_the_form_the_strategy_declares(trained, variant, arch):
    """Evaluation reads the form from the trained body's own PEFT config; it must be the strategy's."""
    result, _ = trained(variant, arch)
    strategy = load_run(result.run_dir).strategy
    seen = form_of_body(result.model.body)
    assert seen.decode == strategy.form.decode
    if hasattr(result.model.body, "active_peft_config"):
        assert seen is strategy.form


def test_every_servable_form_has_a_reader_and_every_reader_a_declared_form():
    from lmtune.serve.kinds import READERS

    declared = {peft_type for peft_type, form in declared_peft_types().items() if form.shares_base}
    assert set(READERS.names()) == declared


def test_a_peft_method_without_a_reader_is_reported_not_servable():
    strategy = STRATEGIES.all()["peft"]
    loha = strategy(strategy.config_cls(peft_type="LOHA"))
    assert loha.serve_kind == "not servable" and not loha.form.shares_base
    assert strategy(strategy.config_cls(peft_type="IA3")).serve_kind == "weight_delta"


@pytest.fixture(scope="module")
def engines(tiny_models, trained):
    """One serving engine per tiny architecture, its adapter root the folder every contract run is written to."""
    from lmtune.serve.engine import Engine, EngineConfig

    @functools.cache
    def engine(arch: str, root: str):
        return Engine(str(tiny_models[arch]), root, EngineConfig(dtype="float32"))  # fp32 on a GPU too

    return engine


SERVE_TEXTS = ["great product really", "awful the item broken", "this was very sad", "so happy and lovely it is"]


@pytest.mark.parametrize("variant,arch", CASES)
def test_served_adapter_equals_the_trained_model(trained, engines, variant, arch):
    """The server, rows mixed with another adapter's rows, gives each row what `lmtune eval`'s model gives."""
    result, _ = trained(variant, arch)
    other, _ = trained("lora", arch)
    engine = engines(arch, str(result.run_dir.parent))
    engine.store.scan()
    name, other_name = result.run_dir.name, other.run_dir.name
    if not form_named(result.metrics["serve_kind"]).shares_base:
        # Full fine-tuning is served as its own base; PEFT methods without a reader (LoHa) say so in the run.
        with pytest.raises(LmtuneError, match="as its own base"):
            engine.store.get(name)
        return
    loaded = load_run(result.run_dir)
    expected = loaded.task.predict(loaded.model, [{"text": t} for t in SERVE_TEXTS])
    served = engine.classify(SERVE_TEXTS, name)
    for want, got in zip(expected, served):
        assert got["label"] == want["label"]
        for label, probability in want["probabilities"].items():
            assert got["probabilities"][label] == pytest.approx(probability, abs=1e-5)
    ids = [engine.tokenizer(t)["input_ids"] for t in SERVE_TEXTS]
    mixed = engine.head_logits(ids + ids, [name] * 4 + [other_name] * 4)
    for row, text_ids in enumerate(ids):
        torch.testing.assert_close(mixed[row], engine.head_logits([text_ids], [name])[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mixed[4 + row], engine.head_logits([text_ids], [other_name])[0], rtol=1e-5, atol=1e-5)


class StopAt(TrainerCallback):
    """Simulates a kill: raises once training passes `step` (after the checkpoint before it was written)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_resume_continues_from_the_checkpoint(tiny_models, toy_data, tmp_path, variant):
    method, _ = VARIANTS[variant]

    def config(name: str, **extra):
        # Trainer's checkpoints are what resume reads; the L-BFGS head fit has none (it refits on cached features).
        raw = tiny_raw_config(tiny_models["llama"], toy_data, tmp_path, method, max_steps=8, eval_every="steps",
                              eval_steps=4, learning_rate=1e-2, keep_checkpoints=True, head_fit="trainer", **extra)
        raw["output"]["name"] = name
        return resolve_config(raw)

    straight = train(config("straight"))
    with pytest.raises(KeyboardInterrupt):
        train(config("killed"), callbacks=[StopAt(6)])
    checkpoint = tmp_path / "killed" / "checkpoints" / "checkpoint-4"
    assert (checkpoint / "optimizer.pt").is_file() and (checkpoint / "model.safetensors").is_file()
    saved = load_file(str(checkpoint / "model.safetensors"))
    assert set(saved) == set(straight.model.trainable_state_dict()), "checkpoints hold exactly the trainable weights"
    resumed = train(config("killed", resume=True))
    assert resumed.metrics["global_step"] == straight.metrics["global_step"] == 8
    # Same data order, optimiser state and RNG from the checkpoint: the resumed run ends where the straight one did.
    for name, tensor in straight.model.trainable_state_dict().items():
        torch.testing.assert_close(resumed.model.trainable_state_dict()[name], tensor, rtol=1e-4, atol=1e-5)
