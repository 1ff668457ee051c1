"""An independent reference for prefix tuning: a Llama forward written out by hand, whose attention reads the
adapter's key/value prefix beside the text.

lmtune generates prefix-tuning rows by a full forward of PEFT's model per token (`generate_by_full_forward`), so a
reference that calls that forward again would compare the code with itself. This one uses only the base model's
weights (projections, norms, MLPs, rotary tables) and PEFT's prefix tensors (`get_prompt`), and does the rest
itself: the prefix keys are used as stored (PEFT never rotates them), the text sits at positions after the
prefix, as in PEFT's training forward (the cache holds the prefix, so the text's positions continue after it),
the text is causal and every text token sees the whole prefix.
"""

from __future__ import annotations

import torch

from lmtune.device import to_model_device


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _prefix_tensors(peft_model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the prefix keys and values: (1, key/value heads, virtual tokens, head dim)."""
    cache = peft_model.get_prompt(batch_size=1)
    return [(layer.keys, layer.values) for layer in cache.layers]


@torch.no_grad()
def prefix_llama_logits(peft_model, ids: torch.Tensor) -> torch.Tensor:
    """Logits for one unpadded row `ids` (1, length) of a prefix-tuned Llama."""
    base = peft_model.get_base_model()
    prefix = _prefix_tensors(peft_model)
    length, before = ids.shape[1], prefix[0][0].shape[2]
    hidden = base.model.embed_tokens(ids)
    device = ids.device
    cos, sin = base.model.rotary_emb(hidden, torch.arange(before, before + length, device=device)[None])
    cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
    visible = torch.cat([torch.ones(length, before, dtype=torch.bool, device=device),
                         torch.ones(length, length, dtype=torch.bool, device=device).tril()], dim=1)
    for layer, (prefix_k, prefix_v) in zip(base.model.layers, prefix, strict=True):
        hidden = hidden + _attention(layer.self_attn, layer.input_layernorm(hidden), prefix_k, prefix_v, cos, sin, visible)
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return base.lm_head(base.model.norm(hidden))


def _attention(attn, x, prefix_k, prefix_v, cos, sin, visible) -> torch.Tensor:
    length, head_dim = x.shape[1], attn.head_dim
    q, k, v = (proj(x).view(1, length, -1, head_dim).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
    k, v = torch.cat([prefix_k, k], dim=2), torch.cat([prefix_v, v], dim=2)
    groups = q.shape[1] // k.shape[1]  # grouped-query attention: each key/value head serves `groups` query heads
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    weights = ((q @ k.transpose(-1, -2)) / head_dim**0.5).masked_fill(~visible, float("-inf")).softmax(-1)
    return attn.o_proj((weights @ v).transpose(1, 2).reshape(1, length, -1))


def prefix_greedy(model, prompt: str, steps: int, add_special_tokens: bool = True) -> list[int]:
    """Greedy new token ids for `prompt` by the hand-written forward, one full pass per token."""
    ids = to_model_device(model.tokenizer([prompt], return_tensors="pt", return_token_type_ids=False,
                                          add_special_tokens=add_special_tokens)["input_ids"], model)
    start = ids.shape[1]
    for _ in range(steps):
        ids = torch.cat([ids, prefix_llama_logits(model.body, ids)[:, -1:].argmax(-1)], dim=1)
    return ids[0, start:].tolist()
