"""The speed and memory switches of a training run (`train.group_by_length`, `packing`, `lm_logits`,
`torch_compile`, `liger_kernel`, `gradient_checkpointing`): what each changes and where it is exact.

Where packing is exact, read in transformers 5.24's `masking_utils`: `create_causal_mask` looks at `position_ids`
when the 2D attention mask is None and there is no cache (training) and turns every restart of the positions into
a block-diagonal causal mask (`find_packed_sequence_indices`) — for sdpa, eager and flex attention alike (flash
attention reads the same boundaries from the position ids). So a decoder whose modelling code builds its mask with
`create_causal_mask` keeps packed sequences apart; `create_bidirectional_mask` (BERT and other encoders) ignores the
positions, so a flattened encoder batch would attend across rows: encoders get length-grouped batches instead.
PEFT's prompt-learning adapters prepend virtual tokens to every row, which a flattened row cannot take.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import torch
from transformers import DataCollatorWithFlattening
from transformers.trainer_pt_utils import LengthGroupedSampler

from lmtune.config.schema import TrainConfig
from lmtune.device import cuda_available
from lmtune.errors import LmtuneError
from lmtune.tasks.generative import is_prompt_learning

IGNORE = -100
PACKING_ATTENTION = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")
"""Attention implementations whose masks (or varlen kernels) honour per-sequence position ids."""
PACKING_PAYS = ("flex_attention", "flash_attention_2", "flash_attention_3")
"""Where `packing: auto` packs: kernels that skip the attention between packed rows (varlen or block-sparse).
sdpa and eager are exact too, but attend over the whole packed row with a dense block-diagonal mask: 8 rows of 160
tokens cost 8x the attention of the padded rows. Measured on SmolLM2 + LoRA (math_data.json, batch 8, CPU): packed
on sdpa 0.90x the length-grouped baseline's tokens/s (at 0.69x its memory), so there length grouping does the work."""


def trainer_arguments(t: TrainConfig) -> dict[str, Any]:
    """The TrainingArguments these switches set. Liger and checkpointing are applied to the body by `prepare`
    (Trainer's own hooks expect a PreTrainedModel, and lmtune's TaskModel wraps one)."""
    return {
        "train_sampling_strategy": "group_by_length" if t.group_by_length else "random",
        "torch_compile": compiles(t),
    }


def compiles(t: TrainConfig) -> bool:
    return cuda_available() if t.torch_compile == "auto" else t.torch_compile


def language_model(body):
    """The transformers model under a PEFT wrapper (or the body itself)."""
    return body.get_base_model() if hasattr(body, "get_base_model") else body


def packing_blocker(model) -> str | None:
    """Why padding-free packing would not be exact for this task model, or None where it is."""
    lm = language_model(model.body)
    config = lm.config
    if not model.takes_packed_rows:
        return "the task's model reads whole rows (a head on pooled or per-token states)"
    if getattr(config, "is_encoder_decoder", False) or model.backbone.kind != "decoder":
        return f"{config.model_type} is not a decoder (its attention would mix the packed rows)"
    if is_prompt_learning(model.body):
        return "a prompt-learning adapter prepends virtual tokens to every row"
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in PACKING_ATTENTION:
        return f"attention implementation {implementation!r} is not one of {', '.join(PACKING_ATTENTION)}"
    decoder = getattr(lm, "base_model", lm)  # e.g. LlamaModel inside LlamaForCausalLM: where the mask is built
    if not hasattr(sys.modules.get(type(decoder).__module__), "create_causal_mask"):
        return f"{config.model_type}'s modelling code does not build its mask with transformers' create_causal_mask"
    return None


def uses_packing(t: TrainConfig, model) -> bool:
    if t.packing is False:
        return False
    blocker = packing_blocker(model)
    if blocker and t.packing is True:
        raise LmtuneError(f"train.packing=true: packing is not exact here: {blocker}; use train.packing=auto or false")
    implementation = getattr(language_model(model.body).config, "_attn_implementation", None)
    return blocker is None and (t.packing is True or implementation in PACKING_PAYS)


def train_collator(t: TrainConfig, task, model):
    """The training batches: padding-free rows where packing applies, else the task's own (padded) collator."""
    if uses_packing(t, model):
        return DataCollatorWithFlattening(separator_id=IGNORE)
    return task.collator(model.tokenizer)


def prepare(t: TrainConfig, model) -> None:
    """Apply the switches that change the model itself, before Trainer sees it."""
    lm = language_model(model.body)
    liger = liger_blocker(lm)
    if t.liger_kernel is True and liger:
        raise LmtuneError(f"train.liger_kernel=true: {liger}; set train.liger_kernel=auto or false")
    uses_liger = t.liger_kernel is not False and liger is None
    if uses_liger:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=lm)
    if t.gradient_checkpointing:
        if not getattr(lm, "supports_gradient_checkpointing", False):
            raise LmtuneError(f"train.gradient_checkpointing: {lm.config.model_type} does not support it; set it to false")
        # Non-reentrant checkpointing needs no input gradients: frozen embeddings (LoRA, adapters) work as they are.
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lm.config.use_cache = False
    if hasattr(model, "can_keep_logits"):  # causal LMs; Liger fuses the head with the loss itself
        model.labelled_logits_only = t.lm_logits == "labelled" and not uses_liger and model.can_keep_logits()
    print(f"speed: batches {'length-grouped' if t.group_by_length else 'random'}, packing "
          f"{'on' if uses_packing(t, model) else 'off'}, torch.compile {'on' if compiles(t) else 'off'}, Liger "
          f"{'on' if uses_liger else 'off'}, gradient checkpointing {'on' if t.gradient_checkpointing else 'off'}")


def liger_blocker(lm) -> str | None:
    """Why Liger-Kernel cannot apply to this model here, or None where it can."""
    if importlib.util.find_spec("liger_kernel") is None:
        return "Liger-Kernel is not installed (GPU only): pip install 'lmtune[gpu]' (or pip install liger-kernel)"
    if not cuda_available():
        return "Liger-Kernel's Triton kernels need a CUDA GPU"
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    if lm.config.model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return (f"Liger-Kernel has no kernels for {lm.config.model_type}; it supports "
                f"{', '.join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN))}")
    return None


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' length-grouped order, drawn from a generator seeded by (seed, epoch) rather than the global
    RNG: a resumed run replays the same batches of its epoch, so it ends with the same weights as an unbroken run
    (Trainer seeds its random sampler this way through accelerate; it leaves LengthGroupedSampler on the global RNG)."""

    def __init__(self, *args, seed: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # accelerate and Trainer call this at the start of every epoch
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + int(self.epoch))
        return super().__iter__()
