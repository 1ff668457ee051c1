"""Architecture knowledge the strategies share: default adapter targets and where the transformer blocks are."""

from __future__ import annotations

from torch import nn

# Every linear map inside the blocks (the LLM-Adapters/QLoRA finding: all-linear LoRA beats attention-only).
# Suffix match, as PEFT does: "output.dense" covers BERT's attention and MLP outputs but not its pooler.
DEFAULT_LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "key", "value", "output.dense", "intermediate.dense"],
    "roberta": ["query", "key", "value", "output.dense", "intermediate.dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma3_text": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "t5": ["q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"],
    "bart": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "marian": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
}


def default_lora_targets(model_type: str) -> list[str] | str:
    return DEFAULT_LORA_TARGETS.get(model_type, "all-linear")


def transformer_blocks(body: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: the longest ModuleList of same-typed modules (encoder.layer, layers, h)."""
    best: nn.ModuleList | None = None
    for module in body.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            same_type = len({type(m) for m in module}) == 1
            if same_type and (best is None or len(module) > len(best)):
                best = module
    if best is None:
        raise ValueError(f"cannot find the transformer blocks of {type(body).__name__}")
    return best
