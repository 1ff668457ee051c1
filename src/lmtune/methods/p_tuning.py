"""P-tuning through PEFT's prompt encoder (MLP or LSTM), plus what PEFT lacks: the encoder's input embeddings
initialised from a hand-written prompt, and runs that can be trained further (`train.init_from`)."""

from __future__ import annotations

import types
from typing import Any, Literal

import torch
from peft import PromptEncoderConfig, PromptEncoderReparameterizationType
from pydantic import Field

from lmtune.config.schema import MethodConfig
from lmtune.forms import VIRTUAL_TOKENS
from lmtune.methods._peft import PeftStrategy
from lmtune.methods.base import register_strategy


class PTuningMethodConfig(MethodConfig):
    name: Literal["p_tuning"] = "p_tuning"
    """P-tuning: a small MLP/LSTM prompt encoder produces the virtual tokens; the model stays frozen (PEFT)."""
    num_virtual_tokens: int = Field(20, gt=0)
    """Number of virtual tokens the encoder produces."""
    encoder: Literal["mlp", "lstm"] = "mlp"
    """Prompt encoder type."""
    encoder_hidden_size: int = Field(128, gt=0)
    """Hidden size of the prompt encoder."""
    encoder_num_layers: int = Field(2, gt=0)
    """LSTM layers (the MLP always has two)."""
    encoder_dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout inside the prompt encoder."""
    init_text: str | None = None
    """A hand-written prompt whose token embeddings become the encoder's input embeddings (repeated to fill
    `num_virtual_tokens`); none: an instruction naming the task's labels ("Classify the text as negative, neutral or
    positive."), or PEFT's random start for tasks without labels."""
    residual: bool | None = None
    """Add the encoder's input to its output, the encoder's last layer starting at zero, so that training starts
    from `init_text`'s own embeddings (PEFT's encoder maps its input through random layers, which loses the prompt);
    none: on whenever there is an `init_text` (the task's label prompt included), off otherwise."""


ENCODERS = {"mlp": PromptEncoderReparameterizationType.MLP, "lstm": PromptEncoderReparameterizationType.LSTM}


@register_strategy
class PTuning(PeftStrategy):
    name = "p_tuning"
    config_cls = PTuningMethodConfig
    peft_type = "P_TUNING"
    form = VIRTUAL_TOKENS
    default_learning_rate = 3e-3
    default_pooling_layers = 4  # the body stays frozen: a head reads its last four layers (see model.pooling_layers)
    saved_before = {"residual": False}  # runs from before method.residual have PEFT's plain encoder
    keeps_training_state = True  # PEFT keeps only the encoder's output; the encoder itself is needed to train on
    summary = "a prompt encoder (MLP/LSTM) produces virtual tokens; optional init from a hand-written prompt"

    def peft_config(self, model) -> PromptEncoderConfig:
        cfg = self.cfg
        return PromptEncoderConfig(
            task_type=model.peft_task_type,
            num_virtual_tokens=cfg.num_virtual_tokens,
            encoder_reparameterization_type=ENCODERS[cfg.encoder],
            encoder_hidden_size=cfg.encoder_hidden_size,
            encoder_num_layers=cfg.encoder_num_layers,
            encoder_dropout=cfg.encoder_dropout,
        )

    def defaults(self, labels: list[str] | None) -> dict[str, Any]:
        # PEFT's encoder input is random; starting from the task's own words is what prompt tuning's text init does.
        init_text = self.cfg.init_text or (label_prompt(labels) if labels else None)
        changes: dict[str, Any] = {"method.init_text": init_text} if init_text != self.cfg.init_text else {}
        if self.cfg.residual is None:
            changes["method.residual"] = init_text is not None
        return changes

    def after_wrap(self, model) -> None:
        if self.cfg.init_text:
            init_from_text(model, self.cfg.init_text)
        if self.cfg.residual:
            make_residual(model.body.prompt_encoder["default"])


@torch.no_grad()
def init_from_text(model, text: str) -> None:
    """Copy the prompt's token embeddings into the encoder's input embedding, cycling to fill every token."""
    token_ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not token_ids:
        raise ValueError("method.init_text tokenises to nothing; write a prompt with words in it")
    encoder_input = model.body.prompt_encoder["default"].embedding.weight
    ids = torch.tensor(token_ids, device=encoder_input.device).repeat(encoder_input.size(0) // len(token_ids) + 1)
    word_embeddings = model.body.get_input_embeddings()
    encoder_input.copy_(word_embeddings(ids[: encoder_input.size(0)]).to(encoder_input.dtype))


@torch.no_grad()
def make_residual(encoder) -> None:
    """Output = input + encoder(input), the last linear layer zeroed: the virtual tokens start as the input
    embeddings and the encoder learns a correction. The forward is replaced on this instance only, so PEFT's saved
    prompt (its encoder's output) and lmtune's training state keep their usual keys."""
    last = encoder.mlp_head[-1]
    last.weight.zero_()
    last.bias.zero_()
    encoder.forward = types.MethodType(_residual_forward, encoder)  # a bound method: deepcopy copies it right


def _residual_forward(encoder, indices: torch.Tensor) -> torch.Tensor:
    return encoder.embedding(indices) + type(encoder).forward(encoder, indices)


def label_prompt(labels: list[str]) -> str:
    """An instruction that names the labels: "Classify the text as a, b or c."."""
    words = [str(label).replace("_", " ") for label in labels]
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    return f"Classify the text as {listed}."
