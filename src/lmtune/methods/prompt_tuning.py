"""Prompt tuning through PEFT: trainable soft-prompt embeddings prepended to the input."""

from __future__ import annotations

from typing import Literal

from peft import PromptTuningConfig, PromptTuningInit
from pydantic import Field, model_validator

from lmtune.config.schema import MethodConfig
from lmtune.forms import VIRTUAL_TOKENS
from lmtune.methods._peft import PeftStrategy
from lmtune.methods.base import register_strategy


class PromptTuningMethodConfig(MethodConfig):
    name: Literal["prompt_tuning"] = "prompt_tuning"
    """Prompt tuning: N trainable virtual-token embeddings before the input; the model stays frozen (PEFT)."""
    num_virtual_tokens: int = Field(20, gt=0)
    """Length of the soft prompt."""
    init: Literal["auto", "random", "vocab", "text"] = "auto"
    """Start: `text` from `init_text`'s embeddings, `vocab` from randomly sampled vocabulary embeddings, `random`;
    `auto` is `text` when `init_text` is set, else `vocab` (random init trains far worse, shared/NOTES.md)."""
    init_text: str | None = None
    """A hand-written prompt to start from, e.g. "Classify the sentiment of this review:"."""

    @model_validator(mode="after")
    def _text_needs_text(self):
        if self.init == "text" and not self.init_text:
            raise ValueError("method.init=text needs method.init_text (the prompt to start from)")
        return self


INIT = {"random": PromptTuningInit.RANDOM, "vocab": PromptTuningInit.SAMPLE_VOCAB, "text": PromptTuningInit.TEXT}


@register_strategy
class PromptTuning(PeftStrategy):
    name = "prompt_tuning"
    config_cls = PromptTuningMethodConfig
    peft_type = "PROMPT_TUNING"
    form = VIRTUAL_TOKENS
    default_learning_rate = 3e-2
    default_pooling_layers = 4  # the body stays frozen: a head reads its last four layers (see model.pooling_layers)
    summary = "trainable soft-prompt embeddings before the input (PEFT prompt tuning)"

    def peft_config(self, model) -> PromptTuningConfig:
        cfg = self.cfg
        init = cfg.init if cfg.init != "auto" else ("text" if cfg.init_text else "vocab")
        return PromptTuningConfig(
            task_type=model.peft_task_type,
            num_virtual_tokens=cfg.num_virtual_tokens,
            prompt_tuning_init=INIT[init],
            prompt_tuning_init_text=cfg.init_text if init == "text" else None,
            tokenizer_name_or_path=str(model.backbone.path) if init == "text" else None,
        )
