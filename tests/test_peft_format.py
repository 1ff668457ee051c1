"""Adapters are saved in PEFT's own format: plain PEFT loads them and computes the same body outputs; and
`train.init_from` keeps training a finished run, p-tuning included (which PEFT cannot)."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModel

from conftest import tiny_raw_config
from lmtune.runconfig import resolve_config
from lmtune.train import train

PEFT_METHODS = {
    "lora": {"name": "lora", "rank": 4},
    "prompt_tuning": {"name": "prompt_tuning", "num_virtual_tokens": 4},
    "p_tuning": {"name": "p_tuning", "num_virtual_tokens": 4, "encoder_hidden_size": 16},
    "prefix_tuning": {"name": "prefix_tuning", "num_virtual_tokens": 4},
    "peft-IA3": {"name": "peft", "peft_type": "IA3"},
}


@pytest.mark.parametrize("method", PEFT_METHODS, ids=list(PEFT_METHODS))
def test_plain_peft_loads_the_adapter_and_agrees(tiny_models, toy_data, tmp_path, method):
    raw = tiny_raw_config(tiny_models["llama"], toy_data, tmp_path, PEFT_METHODS[method], max_steps=6, learning_rate=1e-2)
    result = train(resolve_config(raw))
    peft_body = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_models["llama"]), result.run_dir).eval()
    tokenizer = result.model.tokenizer
    batch = tokenizer(["a great item", "this was so awful and broken"], padding=True, return_tensors="pt")
    result.model.eval()
    with torch.no_grad():
        ours = result.model.body(**batch).last_hidden_state
        theirs = peft_body(**batch).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["p_tuning", "lora", "prompt_tuning"])
def test_init_from_continues_a_finished_run(tiny_models, toy_data, tmp_path, method):
    spec = dict(PEFT_METHODS[method], **({"init_text": "great or awful"} if method == "p_tuning" else {}))
    first_raw = tiny_raw_config(tiny_models["llama"], toy_data, tmp_path, spec, max_steps=6, learning_rate=1e-2)
    first_raw["output"]["name"] = "first"
    first = train(resolve_config(first_raw))
    second_raw = tiny_raw_config(tiny_models["llama"], toy_data, tmp_path, spec, max_steps=1, learning_rate=1e-12, head_learning_rate=1e-12,
                                 init_from=str(first.run_dir), warmup_ratio=0.0)
    second_raw["output"]["name"] = "second"
    second = train(resolve_config(second_raw))
    # A near-zero learning rate: the continued run starts exactly where the first one ended, encoder included.
    for name, tensor in first.model.trainable_state_dict().items():
        torch.testing.assert_close(second.model.trainable_state_dict()[name], tensor, rtol=1e-6, atol=1e-6)
    assert second.metrics["accuracy"] == pytest.approx(first.metrics["accuracy"])


@pytest.mark.parametrize("residual", [None, False])
def test_p_tuning_starts_from_its_init_text_when_residual(tiny_models, toy_data, tmp_path, residual):
    from peft.tuners.p_tuning.model import PromptEncoder

    spec = {"name": "p_tuning", "num_virtual_tokens": 5, "encoder_hidden_size": 16, "init_text": "great or awful"}
    if residual is not None:
        spec["residual"] = residual
    result = train(resolve_config(tiny_raw_config(tiny_models["llama"], toy_data, tmp_path, spec, max_steps=1,
                                                  learning_rate=1e-12, head_learning_rate=1e-12, warmup_ratio=0.0)))
    cfg = result.config
    assert cfg.method.residual is (residual is None), "an init_text turns the residual on unless it is set off"
    body = result.model.body
    encoder, indices = body.prompt_encoder["default"], torch.arange(5)
    token_ids = torch.tensor(result.model.tokenizer("great or awful", add_special_tokens=False)["input_ids"])
    prompt = body.get_input_embeddings()(token_ids.repeat(5)[:5])
    with torch.no_grad():
        plain = PromptEncoder.forward(encoder, indices)  # PEFT's own encoder: the reference
        if cfg.method.residual:
            torch.testing.assert_close(encoder(indices), prompt, rtol=0, atol=1e-6)  # step 0 is the written prompt
            torch.testing.assert_close(encoder(indices), encoder.embedding(indices) + plain)
        else:
            torch.testing.assert_close(encoder(indices), plain)
            assert not torch.allclose(plain, prompt, atol=1e-3), "PEFT's random layers do not keep the prompt"
    if cfg.method.residual:
        _check_old_runs_keep_the_plain_encoder(result.run_dir, tmp_path)


def _check_old_runs_keep_the_plain_encoder(run_dir, tmp_path):
    import yaml

    from lmtune.train.rundir import load_run_config

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    del saved["method"]["residual"]
    old = tmp_path / "old-run"
    old.mkdir()
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    assert load_run_config(old).method.residual is False, "a run from before method.residual had PEFT's encoder"
