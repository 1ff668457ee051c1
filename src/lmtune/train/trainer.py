"""transformers.Trainer, subclassed only where lmtune must: checkpoints hold the trainable weights alone."""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save_file
from transformers import Trainer, TrainerState
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import TrainOutput
from transformers.utils import SAFE_WEIGHTS_NAME

from lmtune.train.speed import LengthPoolSampler


class LmtuneTrainer(Trainer):
    """Four changes to transformers' Trainer, nothing else:

    - Checkpoints keep only what trains. The task model is a plain nn.Module (body + head) and Trainer would save
      its whole state dict; the frozen base is reproducible from the base model (KB for adapters, not 540 MB).
      Trainer's resume and best-model paths load with strict=False, so they work as is.
    - The task head gets its own learning rate. It starts from random weights while the body is pretrained; at a
      full-fine-tuning rate (5e-5) it would barely move in a few hundred steps.
    - Length-grouped batches come from lmtune's `LengthPoolSampler` (less padding than transformers' sampler,
      drawn from a generator seeded per epoch, so a resumed run replays the batches an unbroken one would have seen).
    - Resuming from the checkpoint written at the last step trains nothing. Trainer (5.24) takes one step more
      when max_steps ends mid-epoch (its epoch loop steps before it checks max_steps), so a run killed during
      its final evaluation or save would end one optimizer step past the uninterrupted run.
    """

    def __init__(self, *args, head_learning_rate: float | None = None, length_pool: int | None = None, **kwargs):
        # length_pool has no default of its own (train.length_pool holds it); callers that never group by length
        # (continued pre-training) leave it out.
        self.head_learning_rate, self.length_pool = head_learning_rate, length_pool
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

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):  # reproducible under resume (lmtune.train.speed)
            if self.length_pool is None:
                raise ValueError("LmtuneTrainer groups by length only with length_pool set (train.length_pool)")
            return LengthPoolSampler(sampler.batch_size, sampler.lengths, self.args.seed, self.length_pool)
        return sampler

    def train(self, resume_from_checkpoint: str | None = None, **kwargs):
        state_file = Path(resume_from_checkpoint or "") / TRAINER_STATE_NAME
        if resume_from_checkpoint and state_file.is_file():
            state = TrainerState.load_from_json(str(state_file))
            if 0 < state.max_steps <= state.global_step:
                return self._restore_finished(resume_from_checkpoint, state)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _restore_finished(self, checkpoint: str, state: TrainerState) -> TrainOutput:
        """What `train` leaves behind when it ends at `checkpoint`: its weights (the best ones when asked) and state."""
        self.state = state
        self._load_from_checkpoint(checkpoint)
        if self.args.load_best_model_at_end and state.best_model_checkpoint:
            self._load_best_model()
        return TrainOutput(state.global_step, 0.0, {})

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        # Under FSDP, Trainer calls this on every rank with the state dict it gathered (whole on the main process);
        # the model's own tensors are then shards.
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        if state_dict is None:
            state = model.trainable_state_dict()
        else:
            trainable = {name for name, p in model.named_parameters() if p.requires_grad}
            state = {k: v for k, v in state_dict.items() if k in trainable}
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                  os.path.join(output_dir, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})

    def _issue_warnings_after_load(self, load_result) -> None:
        # Frozen weights are missing from checkpoints by design; only weights with no home are a problem.
        if load_result.unexpected_keys:
            raise RuntimeError(f"checkpoint holds weights this model has no place for: {load_result.unexpected_keys[:5]}")
