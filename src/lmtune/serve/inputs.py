"""One forward pass's inputs for rows that each carry their own adapter.

Row layout, decoders (left padding, so every row's next token comes from the last position):
    cache:  [masked zeros][the row's key/value prefix]     (only when some row has a prefix)
    input:  [padding][the row's soft prompt][the row's text]
Encoders pad on the right: [soft prompt][text][padding]. Positions are given explicitly per row and continue
after the row's own prefix, which is what PEFT computes while training (the prefix occupies the first positions,
a soft prompt takes positions 0..v-1 and the text follows), so a row's result never depends on its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from lmtune.forms import place_rows
from lmtune.serve.forms import ServedAdapter


@dataclass
class RowInputs:
    inputs_embeds: torch.Tensor  # [rows, width, hidden]
    attention_mask: torch.Tensor  # [rows, prefix + width]
    position_ids: torch.Tensor  # [rows, width]
    cache: DynamicCache | None
    text_index: torch.Tensor  # [rows, longest text]: where each text token sits in `width`
    text_mask: torch.Tensor  # [rows, longest text]
    next_position: torch.Tensor  # [rows]: the position a continuation's first token takes

    def model_kwargs(self) -> dict:
        kwargs = {"inputs_embeds": self.inputs_embeds, "attention_mask": self.attention_mask,
                  "position_ids": self.position_ids}
        if self.cache is not None:
            kwargs["past_key_values"] = self.cache
        return kwargs


def _body_of(adapter: ServedAdapter | None):
    return adapter.body if adapter is not None else None


def build_inputs(embed: torch.nn.Module, token_rows: Sequence[Sequence[int]], adapters: Sequence[ServedAdapter | None],
                 left_pad: bool, pad_id: int) -> RowInputs:
    device = embed.weight.device
    bodies = [_body_of(a) for a in adapters]
    softs = [b.soft_prompt() if b is not None else None for b in bodies]
    prefixes = [b.kv_prefix() if b is not None else None for b in bodies]
    prefix_lengths = [p[0][0].size(1) if p else 0 for p in prefixes]
    embeds, mask, layout = place_rows(embed, token_rows, softs, left_pad, pad_id)  # the placement evaluation uses
    rows, longest_text = len(token_rows), max(len(t) for t in token_rows)
    positions = torch.zeros(rows, layout.width, dtype=torch.long, device=device)
    text_index = torch.zeros(rows, longest_text, dtype=torch.long, device=device)
    text_mask = torch.zeros(rows, longest_text, dtype=torch.long, device=device)
    for row, tokens in enumerate(token_rows):
        start, length, text_start = layout.starts[row], layout.lengths[row], layout.text_starts[row]
        positions[row, start : start + length] = torch.arange(length) + prefix_lengths[row]
        text_index[row, : len(tokens)] = torch.arange(text_start, text_start + len(tokens))
        text_mask[row, : len(tokens)] = 1
    cache, prefix_mask = _prefix_cache(prefixes, prefix_lengths, embeds)
    next_position = torch.tensor([p + n for p, n in zip(prefix_lengths, layout.lengths)], device=device)
    return RowInputs(embeds, torch.cat([prefix_mask, mask], dim=1), positions, cache, text_index, text_mask, next_position)


def _prefix_cache(prefixes, prefix_lengths: list[int], embeds: torch.Tensor):
    longest = max(prefix_lengths)
    rows = len(prefixes)
    prefix_mask = torch.zeros(rows, longest, dtype=torch.long, device=embeds.device)
    if longest == 0:
        return None, prefix_mask
    template = next(p for p in prefixes if p)
    layers = []
    for layer, (keys0, values0) in enumerate(template):
        keys = keys0.new_zeros(rows, keys0.size(0), longest, keys0.size(2))
        values = values0.new_zeros(rows, values0.size(0), longest, values0.size(2))
        for row, prefix in enumerate(prefixes):
            if prefix:
                keys[row, :, longest - prefix_lengths[row] :] = prefix[layer][0]
                values[row, :, longest - prefix_lengths[row] :] = prefix[layer][1]
        layers.append((keys.to(embeds.dtype), values.to(embeds.dtype)))
    for row, length in enumerate(prefix_lengths):
        prefix_mask[row, longest - length :] = 1
    return DynamicCache(layers), prefix_mask


def gather_text(hidden: torch.Tensor, inputs: RowInputs) -> torch.Tensor:
    """[rows, longest text, hidden]: each row's text positions, left-aligned (padding after)."""
    index = inputs.text_index.unsqueeze(-1).expand(-1, -1, hidden.size(-1))
    return hidden.gather(1, index)
