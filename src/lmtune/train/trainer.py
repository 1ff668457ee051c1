"""transformers.Trainer, subclassed only where lmtune must: checkpoints hold the trainable weights alone."""

from __future__ import annotations

import os

from safetensors.torch import save_file
from transformers import Trainer
from transformers.utils import SAFE_WEIGHTS_NAME


class LmtuneTrainer(Trainer):
    """The task model is a plain nn.Module (body + head). Trainer would checkpoint its whole state dict; the
    frozen base is reproducible from the base model, so checkpoints keep only what trains (KB for adapters,
    not the 540 MB base). Trainer's resume and best-model paths load with strict=False, so they work as is."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        state = self.accelerator.unwrap_model(self.model).trainable_state_dict()
        save_file({k: v.cpu() for k, v in state.items()}, os.path.join(output_dir, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})

    def _issue_warnings_after_load(self, load_result) -> None:
        # Frozen weights are missing from checkpoints by design; only weights with no home are a problem.
        if load_result.unexpected_keys:
            raise RuntimeError(f"checkpoint holds weights this model has no place for: {load_result.unexpected_keys[:5]}")
