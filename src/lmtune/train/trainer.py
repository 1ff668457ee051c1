"""transformers.Trainer, subclassed only where lmtune must: checkpoints hold the trainable weights alone."""

from __future__ import annotations

import os

from safetensors.torch import save_file
from transformers import Trainer
from transformers.utils import SAFE_WEIGHTS_NAME


class LmtuneTrainer(Trainer):
    """Two changes to transformers' Trainer, nothing else:

    - Checkpoints keep only what trains. The task model is a plain nn.Module (body + head) and Trainer would save
      its whole state dict; the frozen base is reproducible from the base model (KB for adapters, not 540 MB).
      Trainer's resume and best-model paths load with strict=False, so they work as is.
    - The task head gets its own learning rate. It starts from random weights while the body is pretrained; at a
      full-fine-tuning rate (5e-5) it would barely move in a few hundred steps.
    """

    def __init__(self, *args, head_learning_rate: float | None = None, **kwargs):
        self.head_learning_rate = head_learning_rate
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.head_learning_rate is None:
            return optimizer
        head = {id(p) for p in self.accelerator.unwrap_model(self.model).head.parameters()}
        head_groups = []
        for group in optimizer.param_groups:
            moved = [p for p in group["params"] if id(p) in head]
            group["params"] = [p for p in group["params"] if id(p) not in head]
            if moved:
                head_groups.append({**group, "params": moved, "lr": self.head_learning_rate})
        optimizer.param_groups = [g for g in optimizer.param_groups if g["params"]]
        for group in head_groups:
            optimizer.add_param_group(group)
        return optimizer

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        state = self.accelerator.unwrap_model(self.model).trainable_state_dict()
        save_file({k: v.cpu() for k, v in state.items()}, os.path.join(output_dir, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})

    def _issue_warnings_after_load(self, load_result) -> None:
        # Frozen weights are missing from checkpoints by design; only weights with no home are a problem.
        if load_result.unexpected_keys:
            raise RuntimeError(f"checkpoint holds weights this model has no place for: {load_result.unexpected_keys[:5]}")
