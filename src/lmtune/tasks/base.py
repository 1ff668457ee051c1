"""The task interface and registry, and the model every task trains: a pretrained body plus a task head."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from lmtune.config.schema import TaskConfig
from lmtune.data.splits import Splits
from lmtune.errors import LmtuneError
from lmtune.registry import Registry

if TYPE_CHECKING:
    from lmtune.models.loading import Backbone
    from lmtune.runconfig import RunConfig


class TaskModel(nn.Module):
    """A body (the backbone, possibly wrapped by a strategy) and a new task head that always trains.

    Strategies replace or wrap `body`; the head, the pooling and the loss belong to the task. Generative tasks
    keep the pretrained LM head inside `body` and have an empty `head`.
    """

    peft_task_type: str = "FEATURE_EXTRACTION"
    """What PEFT should wrap the body as: FEATURE_EXTRACTION where the task owns the head, CAUSAL_LM or
    SEQ_2_SEQ_LM where PEFT must also handle labels and generation (prompt methods prepend virtual tokens)."""

    accepts_loss_kwargs: bool = False
    """Trainer reads this: only models whose loss honours `num_items_in_batch` may skip its division by the
    gradient-accumulation steps (a forward with **kwargs would otherwise be taken to honour it)."""

    has_feature_head: bool = False
    """True where `features(**batch)` gives the vector the head reads and `head.classify(features)` its logits:
    then a frozen body can be run once and the head fitted on cached features (train/head_fit.py)."""
    takes_packed_rows: bool = False
    """Whether the forward takes a padding-free batch (rows concatenated, `position_ids` restarting per row) and
    computes the same loss: a causal LM's token loss does; a head reading pooled or per-row states does not."""

    def __init__(self, backbone: Backbone, head: nn.Module | None = None):
        super().__init__()
        self.body = backbone.body
        self.head = head if head is not None else nn.Module()  # an empty head saves and trains nothing
        self.backbone = backbone  # not a Module: tokenizer, path, kind, pooling, weights hash

    def has_head(self) -> bool:
        return any(True for _ in self.head.parameters())

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    def parameter_counts(self) -> dict[str, int]:
        params = {id(p): p for p in self.parameters()}.values()
        return {
            "trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "total_params": sum(p.numel() for p in params),
        }

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if k in trainable}


class Task(ABC):
    name: ClassVar[str]
    config_cls: ClassVar[type[TaskConfig]]
    backbone_class: ClassVar[str] = "AutoModel"
    """The transformers auto class the body loads with (AutoModel: no head; AutoModelForCausalLM: with its LM head)."""
    default_max_length: ClassVar[int] = 128
    default_metric: ClassVar[str] = "accuracy"
    checkpoint_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1", "roc_auc", "pr_auc", "loss")
    """Metrics the Trainer can compute at each evaluation (and so can pick checkpoints with)."""
    summary: ClassVar[str] = ""
    headline_metric: ClassVar[str] = "accuracy"
    """The metric a leaderboard ranks by (after training, on the test split when there is one)."""
    headline_greater_is_better: ClassVar[bool] = True

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    def defaults(self) -> dict[str, Any]:
        """The task-dependent defaults of an unresolved config, as dotted keys (`lmtune.runconfig.resolve` fills
        them once, so the saved config is explicit): max length and checkpoint metric here; tasks with a label set
        add it (read from the training data)."""
        metric = self.cfg.eval.metric or self.default_metric
        if metric not in self.checkpoint_metrics:
            raise LmtuneError(
                f"eval.metric={metric!r} cannot pick checkpoints for the {self.name} task; "
                f"use one of {', '.join(self.checkpoint_metrics)}"
            )
        return {"model.max_length": self.cfg.model.max_length or self.default_max_length, "eval.metric": metric}

    def trainer_metrics(self):
        """What the Trainer computes from predictions at each evaluation; None means the loss alone (generative
        tasks: collecting vocabulary logits for every token would not fit in memory)."""
        return lambda logits, label_ids: self.compute_metrics(logits, label_ids)

    @abstractmethod
    def load_data(self) -> Splits:
        """Read and check every split before any model is loaded, so bad data fails in seconds."""

    @abstractmethod
    def build_model(self, backbone: Backbone) -> TaskModel:
        """The backbone plus a new task head."""

    @abstractmethod
    def encode(self, table, tokenizer):
        """Tokenised features the model's forward takes."""

    @abstractmethod
    def collator(self, tokenizer):
        """Batches encoded rows."""

    @abstractmethod
    def compute_metrics(self, logits: Any, label_ids: Any) -> dict[str, Any]:
        """Task metrics from predictions on a split."""

    @abstractmethod
    def predict(self, model: TaskModel, rows: list[dict]) -> list[dict]:
        """Human-readable predictions for raw rows."""

    def row_from_text(self, text: str, pair: str | None = None) -> dict:
        """The input row `lmtune predict --text` builds from a string."""
        if pair is not None:
            raise LmtuneError(f"--pair does not apply to the {self.name} task")
        return {"text": text}

    def evaluate(self, model: TaskModel, table, batch_size: int, quick: bool = False) -> dict[str, Any]:
        """Metrics on a split of raw rows. `quick`: only what is cheap (generative tasks skip generation), for a
        validation split when a test split gets the full evaluation. A `predictions` list in the result is
        written beside the metrics by the caller."""
        from lmtune.evaluate.evaluator import evaluate_split

        return evaluate_split(model, self, table, batch_size)

    def data_report(self, splits: Splits) -> dict[str, Any]:
        """Facts about the data worth keeping in metrics.json (e.g. how many rows were cut to max_length)."""
        return {}

    def save_head(self, model: TaskModel, directory: Path) -> list[Path]:
        from safetensors.torch import save_file

        from lmtune.io import atomic_write

        if not model.has_head():
            return []
        state = {k: v.contiguous() for k, v in model.head.state_dict().items()}
        return [atomic_write(directory / "head.safetensors", lambda tmp: save_file(state, str(tmp)))]

    def load_head(self, model: TaskModel, directory: Path) -> None:
        from safetensors.torch import load_file

        if model.has_head():
            model.head.load_state_dict(load_file(str(directory / "head.safetensors")))


TASKS: Registry[Task] = Registry("task", default="classification")
register_task = TASKS.register
