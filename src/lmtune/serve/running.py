"""The running decode batch: its rows, their key/value cache, attention mask and next positions.

Continuous batching needs rows to join and leave between decode steps. New rows are prefilled on their own, then
their cache is merged with the running one: both are left-padded (masked zeros) to the same length and stacked.
Finished rows are dropped, and cache columns no row attends to any more are trimmed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from lmtune.serve.kinds.weight_delta import pad_to
from lmtune.serve.mixed import BatchPlan


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _left_pad(tensor: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    return pad_to(tensor, dim, length, left=True)


class RunningBatch:
    def __init__(self, rows: list, plan: BatchPlan, cache: DynamicCache, mask: torch.Tensor,
                 next_position: torch.Tensor, pending: torch.Tensor):
        self.rows = rows  # the engine's sequences, one per row
        self.plan = plan
        self.cache = cache
        self.mask = mask  # [rows, cached length]
        self.next_position = next_position  # [rows]
        self.pending = pending  # [rows]: the last sampled token, fed at the next step

    def __len__(self) -> int:
        return len(self.rows)

    def merge(self, other: RunningBatch) -> RunningBatch:
        length = max(self.mask.size(1), other.mask.size(1))
        layers = [
            (torch.cat([_left_pad(k1, 2, length), _left_pad(k2, 2, length)]),
             torch.cat([_left_pad(v1, 2, length), _left_pad(v2, 2, length)]))
            for (k1, v1), (k2, v2) in zip(_layers(self.cache), _layers(other.cache))
        ]
        mask = torch.cat([_left_pad(self.mask, 1, length), _left_pad(other.mask, 1, length)])
        return RunningBatch(self.rows + other.rows, self.plan + other.plan, DynamicCache(layers), mask,
                            torch.cat([self.next_position, other.next_position]), torch.cat([self.pending, other.pending]))

    def keep(self, rows: Sequence[int]) -> RunningBatch | None:
        if not rows:
            return None
        if len(rows) == len(self.rows):
            return self  # nothing left: no copy of the cache, and the plan keeps its gathered weights
        index = torch.tensor(list(rows), device=self.mask.device)
        mask = self.mask.index_select(0, index)
        first = int(mask.any(dim=0).long().argmax())  # leading columns nobody attends to any more
        layers = [(k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:]) for k, v in _layers(self.cache)]
        return RunningBatch([self.rows[i] for i in rows], self.plan.select(rows), DynamicCache(layers), mask[:, first:],
                            self.next_position.index_select(0, index), self.pending.index_select(0, index))

    def repeat(self, rows: list, index: list[int]) -> RunningBatch:
        """A batch of `rows`, row j continuing from this batch's row index[j]: a request's n (best_of) rows go on
        from its one prefilled row, each with its own copy of the cache (they diverge from here)."""
        index = torch.tensor(index, device=self.mask.device)
        layers = [(k.index_select(0, index), v.index_select(0, index)) for k, v in _layers(self.cache)]
        return RunningBatch(rows, BatchPlan([self.plan.adapters[i] for i in index.tolist()], self.plan.reference),
                            DynamicCache(layers), self.mask.index_select(0, index),
                            self.next_position.index_select(0, index), self.pending.index_select(0, index))

    def snapshot(self) -> tuple[torch.Tensor, list[int]]:
        """What a decode step changes in place (the mask, each layer's cached length), to undo a failed step."""
        return self.mask, [keys.size(2) for keys, _ in _layers(self.cache)]

    def restore(self, saved: tuple[torch.Tensor, list[int]]) -> None:
        self.mask, lengths = saved
        for layer, length in zip(self.cache.layers, lengths):
            layer.keys, layer.values = layer.keys[:, :, :length], layer.values[:, :, :length]

    def step_inputs(self) -> dict:
        """The model's keyword arguments for feeding every row's pending token."""
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        return {"input_ids": self.pending[:, None], "attention_mask": self.mask,
                "position_ids": self.next_position[:, None], "past_key_values": self.cache, "use_cache": True}
