"""Bottleneck adapters, our PEFT tuner: a new adapter changes nothing; the math matches a hand-written reference
(outputs and gradients); parameter counts follow the formula; PEFT's own loader reads the saved adapter; several
adapters share one model with per-row routing; a causal LM trains with it."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel, TaskType, get_peft_model
from peft.utils import PeftType
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

import lmtune.methods  # noqa: F401  (registers the tuner with PEFT)
from conftest import tiny_raw_config
from lmtune.methods import bottleneck_peft
from lmtune.methods.bottleneck_peft import BottleneckConfig, BottleneckLayer, bottleneck_parameter_count
from lmtune.models.tiny import ARCHES
from lmtune.runconfig import resolve_config
from lmtune.train import train

KINDS = ["series", "parallel"]
PLACEMENTS = ["attention", "mlp", "both"]
LAYERS = 2  # models/tiny.py
# (d_in, d_out) of the module each placement wraps in the tiny models: hidden 32, MLP 64 (GPT-2's MLP is 4 × hidden).
WIDTHS = {
    "llama": {"attention": (32, 32), "mlp": (64, 32)},
    "gpt2": {"attention": (32, 32), "mlp": (128, 32)},
    "bert": {"attention": (32, 32), "mlp": (64, 32)},
}
TEXTS = ["a great item", "this was so awful and broken", "the product is superb"]


def body(folder):
    return AutoModel.from_pretrained(folder).eval()


def bottleneck(**options) -> BottleneckConfig:
    return BottleneckConfig(task_type=TaskType.FEATURE_EXTRACTION, **{"bottleneck_size": 8, **options})


def tokens(folder):
    return AutoTokenizer.from_pretrained(folder)(TEXTS, padding=True, return_tensors="pt")


def randomise_adapters(model: nn.Module, seed: int = 0) -> None:
    """Non-zero adapter weights (a new adapter's up-projection is zero, which would hide any bug)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".bottleneck_" in name:
                parameter.copy_(torch.rand(parameter.shape, generator=generator) - 0.5)


def placement_of(module_name: str) -> str:
    return "attention" if "attn" in module_name or "attention" in module_name else "mlp"


def formula(kind: str, d_in: int, d_out: int, size: int, learned: bool) -> int:
    down_in = d_out if kind == "series" else d_in
    return down_in * size + size + size * d_out + d_out + int(learned)


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ARCHES)
def test_a_new_adapter_leaves_the_model_exactly_unchanged(tiny_models, arch, kind, placement):
    inputs = tokens(tiny_models[arch])
    wrapped = get_peft_model(body(tiny_models[arch]), bottleneck(kind=kind, placement=placement)).eval()
    assert len(wrapped.base_model.targeted_module_names) == LAYERS * (2 if placement == "both" else 1)
    assert {placement_of(n) for n in wrapped.base_model.targeted_module_names} == ({"attention", "mlp"} if placement == "both" else {placement})
    with torch.no_grad():
        assert torch.equal(wrapped(**inputs).last_hidden_state, body(tiny_models[arch])(**inputs).last_hidden_state)


class ReferenceAdapter(nn.Module):
    """The LLM-Adapters math written out, no PEFT: series adds s·up(tanh(down(y))) to the module's output y;
    parallel adds s·up(tanh(down(x))), read from the module's input x."""

    def __init__(self, module: nn.Module, kind: str, layer: BottleneckLayer):
        super().__init__()
        self.module, self.kind = module, kind
        copy = lambda t: nn.Parameter(t.detach().clone())  # noqa: E731
        self.down_weight, self.down_bias = copy(layer.bottleneck_down["default"].weight), copy(layer.bottleneck_down["default"].bias)
        self.up_weight, self.up_bias = copy(layer.bottleneck_up["default"].weight), copy(layer.bottleneck_up["default"].bias)
        learned = "default" in layer.bottleneck_scale
        self.scale = copy(layer.bottleneck_scale["default"]) if learned else layer.bottleneck_fixed_scale["default"]

    def forward(self, x):
        y = self.module(x)
        source = y if self.kind == "series" else x
        return y + self.scale * F.linear(torch.tanh(F.linear(source, self.down_weight, self.down_bias)), self.up_weight, self.up_bias)


@pytest.mark.parametrize("scaling", [2.0, "learned"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ARCHES)
def test_outputs_and_gradients_match_a_hand_written_reference(tiny_models, arch, kind, scaling):
    folder, inputs = tiny_models[arch], tokens(tiny_models[arch])
    wrapped = get_peft_model(body(folder), bottleneck(kind=kind, placement="both", scaling=scaling))
    randomise_adapters(wrapped)
    reference = body(folder).requires_grad_(False)
    references = {}
    for name in wrapped.base_model.targeted_module_names:
        parent, _, child = name.rpartition(".")
        layer = wrapped.base_model.model.get_submodule(name)
        references[name] = ReferenceAdapter(reference.get_submodule(name), kind, layer)
        setattr(reference.get_submodule(parent), child, references[name])

    embeddings = reference.get_input_embeddings()(inputs["input_ids"])
    weights = torch.randn(*inputs["input_ids"].shape, 32, generator=torch.Generator().manual_seed(1))
    extra = {k: v for k, v in inputs.items() if k != "input_ids"}
    ours_in, theirs_in = embeddings.clone().requires_grad_(), embeddings.clone().requires_grad_()
    ours = wrapped(inputs_embeds=ours_in, **extra).last_hidden_state
    theirs = reference(inputs_embeds=theirs_in, **extra).last_hidden_state
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()

    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_in.grad, theirs_in.grad)
    for name, ref in references.items():
        layer = wrapped.base_model.model.get_submodule(name)
        torch.testing.assert_close(layer.bottleneck_down["default"].weight.grad, ref.down_weight.grad)
        torch.testing.assert_close(layer.bottleneck_down["default"].bias.grad, ref.down_bias.grad)
        torch.testing.assert_close(layer.bottleneck_up["default"].weight.grad, ref.up_weight.grad)
        torch.testing.assert_close(layer.bottleneck_up["default"].bias.grad, ref.up_bias.grad)
        if scaling == "learned":
            torch.testing.assert_close(layer.bottleneck_scale["default"].grad, ref.scale.grad)


@pytest.mark.parametrize("kind,scaling", [("series", 1.0), ("parallel", "learned")])
@pytest.mark.parametrize("arch", ARCHES)
def test_trainable_parameters_follow_the_formula(tiny_models, toy_data, tmp_path, arch, kind, scaling):
    method = {"name": "bottleneck", "kind": kind, "scaling": scaling, "placement": "both", "bottleneck_size": 8}
    result = train(resolve_config(tiny_raw_config(tiny_models[arch], toy_data, tmp_path, method, max_steps=1)))
    learned = scaling == "learned"
    per_adapter = {p: formula(kind, *WIDTHS[arch][p], 8, learned) for p in ("attention", "mlp")}
    layers = {n: m for n, m in result.model.body.named_modules() if isinstance(m, BottleneckLayer)}
    assert len(layers) == 2 * LAYERS
    for name, layer in layers.items():
        own = sum(p.numel() for n, p in layer.named_parameters() if p.requires_grad)
        assert own == per_adapter[placement_of(name)] == bottleneck_parameter_count(kind, *WIDTHS[arch][placement_of(name)], 8, learned)
    head = sum(p.numel() for p in result.model.head.parameters())
    assert result.metrics["trainable_params"] == LAYERS * sum(per_adapter.values()) + head
    on_disk = json.loads((result.run_dir / "metrics.json").read_text())
    assert on_disk["trainable_params"] == result.metrics["trainable_params"]


@pytest.mark.parametrize("arch,kind", [("llama", "series"), ("gpt2", "parallel"), ("bert", "series")])
def test_plain_peft_loads_the_saved_adapter_and_agrees(tiny_models, toy_data, tmp_path, arch, kind):
    method = {"name": "bottleneck", "kind": kind, "placement": "both", "bottleneck_size": 8}
    result = train(resolve_config(tiny_raw_config(tiny_models[arch], toy_data, tmp_path, method, max_steps=6, learning_rate=1e-2)))
    assert json.loads((result.run_dir / "adapter_config.json").read_text())["peft_type"] == "BOTTLENECK"
    loaded = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_models[arch]), result.run_dir).eval()
    assert any(layer.bottleneck_up["default"].weight.abs().sum() > 0 for layer in loaded.modules() if isinstance(layer, BottleneckLayer))
    inputs = tokens(tiny_models[arch])
    result.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).last_hidden_state, result.model.body(**inputs).last_hidden_state, rtol=1e-5, atol=1e-5)


def test_a_fresh_interpreter_loads_the_adapter_after_importing_lmtune(tiny_models, tmp_path):
    wrapped = get_peft_model(body(tiny_models["llama"]), bottleneck())
    wrapped.save_pretrained(tmp_path / "adapter")
    script = ("import sys, lmtune.methods; from peft import PeftModel; from transformers import AutoModel; "
              "m = PeftModel.from_pretrained(AutoModel.from_pretrained(sys.argv[1]), sys.argv[2]); "
              "print(type(m.peft_config['default']).__name__)")
    done = subprocess.run([sys.executable, "-c", script, str(tiny_models["llama"]), str(tmp_path / "adapter")],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "BottleneckConfig"


@pytest.mark.parametrize("arch", ARCHES)
def test_a_mixed_batch_gives_each_row_what_its_adapter_alone_gives(tiny_models, arch):
    inputs = tokens(tiny_models[arch])
    model = get_peft_model(body(tiny_models[arch]), bottleneck(kind="series", placement="both"), adapter_name="sst")
    model.add_adapter("imdb", bottleneck(kind="parallel", placement="mlp", scaling="learned", non_linearity="relu"))
    randomise_adapters(model)
    model.eval()
    with torch.no_grad():
        mixed = model(**inputs, adapter_names=["sst", "imdb", "__base__"]).last_hidden_state
        alone = {}
        for name in ["sst", "imdb"]:
            model.set_adapter(name)
            alone[name] = model(**inputs).last_hidden_state
        with model.disable_adapter():
            alone["__base__"] = model(**inputs).last_hidden_state
    assert not torch.allclose(alone["sst"], alone["imdb"]) and not torch.allclose(alone["sst"], alone["__base__"])
    for row, name in enumerate(["sst", "imdb", "__base__"]):
        torch.testing.assert_close(mixed[row], alone[name][row], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="non-existing adapter"):
        model(**inputs, adapter_names=["sst", "typo", "imdb"])
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        model(**inputs, adapter_names=["sst", "imdb", "__base__"])


def test_a_causal_lm_trains_with_bottleneck_adapters(tiny_models, toy_data):
    folder = tiny_models["llama"]
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder),
                           BottleneckConfig(task_type=TaskType.CAUSAL_LM, placement="both", bottleneck_size=8))
    texts = [json.loads(line)["text"] for line in toy_data["train"].read_text().splitlines()[:16]]
    batch = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    # The tiny random model's frozen output layer has small weights, so the loss can only move a little (3.46 →
    # 3.37 here); what matters is that the adapters learn through a causal LM's forward and backward.
    assert losses[-1] < losses[0] - 0.05 and losses[-1] <= min(losses[:5])


def test_target_modules_replace_the_placement(tiny_models):
    wrapped = get_peft_model(body(tiny_models["llama"]), bottleneck(target_modules=["q_proj"]))
    assert wrapped.base_model.targeted_module_names and all(n.endswith("q_proj") for n in wrapped.base_model.targeted_module_names)


def test_bad_options_and_merging_are_refused_clearly(tiny_models):
    with pytest.raises(ValueError, match="kind must be one of"):
        bottleneck(kind="sideways")
    with pytest.raises(ValueError, match="scaling must be"):
        bottleneck(scaling="big")
    wrapped = get_peft_model(body(tiny_models["llama"]), bottleneck())
    with pytest.raises(ValueError, match="cannot be merged"):
        wrapped.merge_and_unload()


def test_registration_is_idempotent():
    importlib.reload(bottleneck_peft)  # runs the enum extension and the registration a second time
    bottleneck_peft.register()
    assert [t for t in PeftType if t.value == "BOTTLENECK"] == [PeftType.BOTTLENECK]
    assert PeftType("BOTTLENECK") is PeftType["BOTTLENECK"] is PeftType.BOTTLENECK
    assert isinstance(PeftType.BOTTLENECK, str) and PeftType.BOTTLENECK == "BOTTLENECK"
