"""Per-row weight deltas inside one forward pass: forward hooks on the target modules read the current batch plan.

A `BatchPlan` says which adapter each row carries. For every module some row's adapter changes, rows are grouped
by the kind of change (all LoRA rows together, bottleneck rows by kind and activation), each group's weights are
gathered once per plan, and each module call adds every group's rows' deltas with batched matmuls: the cost grows
with the rows, not with the number of distinct adapters. `reference=True` computes the same thing one adapter at
a time (PEFT's way), the slow path the fast one is tested against.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn

from lmtune.serve.forms import ServedAdapter
from lmtune.serve.kinds.weight_delta import WeightDeltaPart


class BatchPlan:
    def __init__(self, adapters: Sequence[ServedAdapter | None], reference: bool = False):
        self.adapters = list(adapters)
        self.reference = reference
        self._groups: dict[str, list] = {}
        self.modules: set[str] = set()
        for adapter in self.adapters:
            if adapter is not None and isinstance(adapter.body, WeightDeltaPart):
                self.modules.update(adapter.body.module_names())

    def __len__(self) -> int:
        return len(self.adapters)

    def select(self, rows: Sequence[int]) -> BatchPlan:
        return BatchPlan([self.adapters[i] for i in rows], self.reference)

    def __add__(self, other: BatchPlan) -> BatchPlan:
        return BatchPlan(self.adapters + other.adapters, self.reference)

    def groups(self, module: str, device: torch.device) -> list:
        """[(row indices, part class, stacked weights | per-row parts)] for `module`, built on first use."""
        if module not in self._groups:
            by_key: dict = {}
            for row, adapter in enumerate(self.adapters):
                part = adapter.body if adapter is not None else None
                if isinstance(part, WeightDeltaPart) and module in part.modules:
                    by_key.setdefault((type(part), part.group_key(module)), []).append((row, part))
            groups = []
            for (cls, _), members in by_key.items():
                rows = torch.tensor([row for row, _ in members], device=device)
                parts = [part for _, part in members]
                groups.append((rows, cls, parts if self.reference else _Stacked(cls, parts, module, device)))
            self._groups[module] = groups
        return self._groups[module]


class DeltaHooks:
    """Forward hooks on the served model's modules; they do nothing unless a plan with deltas there is active.
    The engine runs every forward pass on one thread, so the active plan is plain per-instance state."""

    def __init__(self, model: nn.Module):
        self._modules = dict(model.named_modules())
        self._hooked: set[str] = set()
        self._plan: BatchPlan | None = None
        self._lock = threading.Lock()

    def ensure(self, names: Sequence[str]) -> None:
        with self._lock:
            for name in names:
                if name not in self._hooked:
                    self._modules[name].register_forward_hook(self._hook(name))
                    self._hooked.add(name)

    @contextmanager
    def active(self, plan: BatchPlan):
        self.ensure(sorted(plan.modules))
        self._plan = plan
        try:
            yield
        finally:
            self._plan = None

    def _hook(self, name: str):
        def add_deltas(module, inputs, output):
            plan = self._plan
            if plan is None or name not in plan.modules:
                return None
            x = inputs[0]
            result = output
            for rows, cls, weights in plan.groups(name, output.device):
                if plan.reference:
                    for row, part in zip(rows.tolist(), weights):
                        delta = part.delta(name, x[row : row + 1], output[row : row + 1])
                        result = result.index_add(0, torch.tensor([row], device=output.device), delta)
                else:
                    result = result.index_add(0, rows, cls.apply(weights.per_row(), x.index_select(0, rows),
                                                                 output.index_select(0, rows)))
            return result

        return add_deltas


class _Stacked:
    """A group's weights stacked once per *distinct* adapter, not per row: 32 rows of one adapter hold one copy.
    `per_row` gathers the rows' view for one module call only, so the copy lives no longer than that call."""

    def __init__(self, cls, parts: list, module: str, device: torch.device):
        distinct: dict[int, int] = {}
        for part in parts:
            distinct.setdefault(id(part), len(distinct))
        unique = list({id(p): p for p in parts}.values())
        self.stacked = cls.stack(unique, module)
        self.index = None if len(unique) == len(parts) else torch.tensor([distinct[id(p)] for p in parts], device=device)

    def per_row(self):
        return self.stacked if self.index is None else _take(self.stacked, self.index)


def _take(stacked, index: torch.Tensor):
    """`stacked` (tensors with a row dimension first, in a tuple/list/dict beside other values) at rows `index`."""
    if isinstance(stacked, torch.Tensor):
        return stacked.index_select(0, index)
    if isinstance(stacked, dict):
        return {key: _take(value, index) for key, value in stacked.items()}
    if isinstance(stacked, (tuple, list)):
        return type(stacked)(_take(value, index) for value in stacked)
    return stacked
