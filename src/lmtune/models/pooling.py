"""Sequence → vector, the way the backbone was trained to be read."""

from __future__ import annotations

import torch


def real_token_states(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Drop positions the caller did not send. Prompt methods prepend virtual tokens to the sequence (PEFT puts
    them first), so the last `mask_len` positions are the real tokens; this keeps pooling strategy-agnostic."""
    return hidden[:, hidden.size(1) - attention_mask.size(1) :]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    hidden = real_token_states(hidden, attention_mask)
    mask = attention_mask.to(hidden.dtype)
    if mode == "mean":
        summed = (hidden * mask.unsqueeze(-1)).sum(dim=1)
        return summed / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        # Works for left and right padding: the last position whose mask is 1.
        length = attention_mask.size(1)
        last = length - 1 - torch.argmax(attention_mask.flip(dims=[1]).to(torch.long), dim=1)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    raise ValueError(f"unknown pooling {mode!r}; use mean, cls or last")


def head_layers(model_config, requested: int | None) -> int:
    """How many last hidden layers a head reads: `model.pooling_layers`, at most the body's layers plus its
    embedding output (a default of 4 on a 2-layer test model reads all 3)."""
    available = int(getattr(model_config, "num_hidden_layers", 0) or 0) + 1
    return max(1, min(requested or 1, available))


def last_layers(hidden_states, last_hidden_state: torch.Tensor, count: int) -> torch.Tensor:
    """The last `count` hidden layers concatenated on the feature axis, the last one last. The model's own
    `last_hidden_state` stands for the top layer: some architectures apply a final norm after the last block that
    their `hidden_states` tuple does not hold. Pooling is per feature, so pooling this equals concatenating each
    layer's pooled vector."""
    if count == 1:
        return last_hidden_state
    return torch.cat([*hidden_states[-count:-1], last_hidden_state], dim=-1)
