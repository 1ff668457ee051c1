"""The speed and memory switches of a training run (`train.group_by_length`, `length_pool`, `packing`, `lm_logits`,
`torch_compile`, `liger_kernel`, `fast_dropout`, `gradient_checkpointing`): what each changes and where it is exact.

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
from torch.utils.data import Sampler
from transformers import DataCollatorWithFlattening

from lmtune.config.schema import TrainConfig
from lmtune.device import cuda_available
from lmtune.errors import LmtuneError
from lmtune.tasks.generative import is_prompt_learning
from lmtune.train.dropout import use_fast_dropout

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


def fast_dropout(t: TrainConfig) -> bool:
    return not cuda_available() if t.fast_dropout == "auto" else t.fast_dropout


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
    dropouts = use_fast_dropout(model) if fast_dropout(t) else 0
    if hasattr(model, "can_keep_logits"):  # causal LMs; Liger fuses the head with the loss itself
        model.labelled_logits_only = t.lm_logits == "labelled" and not uses_liger and model.can_keep_logits()
    print(f"speed: batches {'length-grouped' if t.group_by_length else 'random'}, packing "
          f"{'on' if uses_packing(t, model) else 'off'}, torch.compile {'on' if compiles(t) else 'off'}, Liger "
          f"{'on' if uses_liger else 'off'}, gradient checkpointing {'on' if t.gradient_checkpointing else 'off'}, "
          f"fast dropout {f'on ({dropouts} modules)' if dropouts else 'off'}")


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


class LengthPoolSampler(Sampler[int]):
    """Length-grouped batches, drawn from a generator seeded by (seed, epoch): the epoch's rows in random order are
    cut into pools of `pool` batches, each pool is sorted by length (ties stay in random order) and cut into
    batches, and the batches are shuffled. The batch holding the epoch's longest row comes first (as in
    transformers' LengthGroupedSampler: a batch too big for memory fails at the first step, not hours in) and a
    short last batch comes last (the data loader cuts its batches from this order).

    transformers' LengthGroupedSampler sorts pools of min(50, rows / (4 x batch)) batches and keeps each pool's
    batches in sorted order; on 2,000 SST-2 rows at batch 32 that leaves 14% of the batch tokens padding, 6% here
    (benchmarks/RESULTS.md, train_speed). Its order also comes from the global RNG, which a
    resumed run restores differently; a generator seeded per epoch makes a resumed run replay the batches of an
    unbroken one."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int, pool: int):
        self.batch_size, self.lengths, self.seed, self.pool, self.epoch = batch_size, list(lengths), seed, pool, 0

    def set_epoch(self, epoch: int) -> None:  # accelerate and Trainer call this at the start of every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + int(self.epoch))
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.pool * self.batch_size
        batches = []
        for start in range(0, len(order), size):
            pool = sorted(order[start : start + size], key=self.lengths.__getitem__, reverse=True)
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        short = [batches.pop()] if batches and len(batches[-1]) < self.batch_size else []
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        if batches:
            longest = max(range(len(batches)), key=lambda i: self.lengths[batches[i][0]])
            batches[0], batches[longest] = batches[longest], batches[0]
        return iter([row for batch in batches + short for row in batch])
