"""Sequence classification, single texts and text pairs, on encoder and decoder backbones."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from transformers import DataCollatorWithPadding
from transformers.modeling_outputs import SequenceClassifierOutput

from lmtune.config.schema import TaskConfig
from lmtune.data.labels import check_labels, label_values, resolve_label_set
from lmtune.data.sources import read_split
from lmtune.data.splits import Splits, split_off_validation, stratified_sample
from lmtune.device import to_model_device
from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import classification_metrics
from lmtune.models.pooling import head_layers, last_layers, pool
from lmtune.tasks.base import Task, TaskModel, register_task


class ClassificationHead(nn.Module):
    def __init__(self, hidden_size: int, num_labels: int, pooling: str, dropout: float = 0.1, layers: int = 1):
        super().__init__()
        self.pooling = pooling
        self.layers = layers
        """How many of the body's last hidden layers it reads, concatenated (the last one last)."""
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size * layers, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classify(pool(hidden, attention_mask, self.pooling))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features: all the head trains (a frozen body's features can be computed once).
        The head keeps fp32 weights on a bf16/fp16 base: its input is cast to them (autocast, where on, casts back)."""
        return self.classifier(self.dropout(features.to(self.classifier.weight.dtype)))


class SequenceClassifier(TaskModel):
    has_feature_head = True

    def features(self, input_ids=None, attention_mask=None, token_type_ids=None, **_: Any) -> torch.Tensor:
        """The pooled body output the head classifies."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if self.head.layers == 1:
            hidden = self.body(**inputs).last_hidden_state
        else:
            output = self.body(**inputs, output_hidden_states=True)
            hidden = last_layers(output.hidden_states, output.last_hidden_state, self.head.layers)
        return pool(hidden, attention_mask, self.head.pooling)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **_: Any):
        logits = self.head.classify(self.features(input_ids, attention_mask, token_type_ids))
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class ClassificationConfig(TaskConfig):
    name: Literal["classification"] = "classification"
    """One label per text or text pair (data.text_column, data.text_pair_column, data.label_column)."""


@register_task
class ClassificationTask(Task):
    name = "classification"
    config_cls = ClassificationConfig
    summary = "one label per text or text pair; a new head on the pooled body"

    @property
    def labels(self) -> list[str]:
        if not self.cfg.data.labels:
            raise RuntimeError("lmtune.runconfig.resolve() fills the label set first")
        return self.cfg.data.labels

    def defaults(self) -> dict[str, Any]:
        # The resolved config records the label order the head is built with (sorted training labels by default).
        if self.cfg.data.labels:
            return super().defaults()
        return {**super().defaults(), "data.labels": resolve_label_set(self._train_labels(self._read_train()), None)}

    def _read_train(self):
        if self.cfg.data.train is None:
            raise LmtuneError("no training data: set data.train to a jsonl/json/csv/tsv file")
        train = read_split(self.cfg.data, "train")
        self._check_columns(train, "train")
        return train

    def _train_labels(self, train) -> list[str]:
        return label_values(train, self.cfg.data.label_column, "train")

    def load_data(self) -> Splits:
        data, seed = self.cfg.data, self.cfg.train.seed
        train = self._read_train()
        train_labels = self._train_labels(train)
        check_labels(train_labels, resolve_label_set(train_labels, self.labels), "train")
        if data.max_train_samples:
            train = stratified_sample(train, train_labels, data.max_train_samples, seed)
            train_labels = label_values(train, data.label_column, "train")
        validation = read_split(data, "validation")
        if validation is None:
            train, validation = split_off_validation(train, train_labels, data.validation_fraction, seed)
        splits = Splits(train, validation, read_split(data, "test"))
        for split_name in ("validation", "test"):
            table = getattr(splits, split_name)
            if table is not None:
                table = self._checked(table, split_name)
                setattr(splits, split_name, table)
        return splits

    def _checked(self, table, split_name: str):
        if len(table) == 0:
            raise LmtuneError(f"the {split_name} data is empty")
        self._check_columns(table, split_name)
        check_labels(label_values(table, self.cfg.data.label_column, split_name), self.labels, split_name)
        limit = self.cfg.data.max_eval_samples
        return table.select(range(min(limit, len(table)))) if limit else table

    def _check_columns(self, table, split_name: str) -> None:
        for key in ("text_column", "text_pair_column"):
            column = getattr(self.cfg.data, key)
            if column is not None and column not in table.column_names:
                raise LmtuneError(
                    f"{split_name} data has no column {column!r} (data.{key}); its columns are {table.column_names}"
                )

    def build_model(self, backbone) -> SequenceClassifier:
        layers = head_layers(backbone.body.config, self.cfg.model.pooling_layers)
        head = ClassificationHead(backbone.body.config.hidden_size, len(self.labels), backbone.pooling, layers=layers)
        return SequenceClassifier(backbone, head)

    def _texts(self, rows: dict[str, list]) -> tuple[list[str], list[str] | None]:
        data = self.cfg.data
        first = [str(t) for t in rows[data.text_column]]
        second = [str(t) for t in rows[data.text_pair_column]] if data.text_pair_column else None
        return first, second

    def _tokenize(self, rows: dict[str, list], tokenizer) -> dict[str, list]:
        first, second = self._texts(rows)
        features = tokenizer(first, second, truncation=True, max_length=self.cfg.model.max_length)
        return {k: v for k, v in features.items() if k in tokenizer.model_input_names}

    def encode(self, table, tokenizer):
        index = {label: i for i, label in enumerate(self.labels)}
        label_column = self.cfg.data.label_column

        def encode_batch(rows: dict[str, list]) -> dict[str, list]:
            features = self._tokenize(rows, tokenizer)
            features["labels"] = [index[str(v)] for v in rows[label_column]]
            return features

        return table.map(encode_batch, batched=True, remove_columns=table.column_names)

    def collator(self, tokenizer):
        return DataCollatorWithPadding(tokenizer)

    def compute_metrics(self, logits, label_ids) -> dict[str, Any]:
        logits = torch.as_tensor(np.asarray(logits), dtype=torch.float32)
        probs = torch.softmax(logits, dim=-1).numpy()
        return classification_metrics(np.asarray(label_ids), probs, self.labels)

    @torch.no_grad()
    def predict(self, model: TaskModel, rows: list[dict], batch_size: int = 64) -> list[dict]:
        model.eval()
        collate = self.collator(model.tokenizer)
        results = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            self._check_columns_in_rows(chunk)
            columns = {k: [r.get(k) for r in chunk] for k in chunk[0]}
            features = self._tokenize(columns, model.tokenizer)
            batch = to_model_device(collate([{k: v[i] for k, v in features.items()} for i in range(len(chunk))]), model)
            probs = torch.softmax(model(**batch).logits.float(), dim=-1)
            for row_probs in probs.tolist():
                best = int(np.argmax(row_probs))
                results.append({"label": self.labels[best], "probabilities": dict(zip(self.labels, row_probs))})
        return results

    def row_from_text(self, text: str, pair: str | None = None) -> dict:
        data = self.cfg.data
        if pair is not None and not data.text_pair_column:
            raise LmtuneError("--pair needs a run trained on text pairs (data.text_pair_column)")
        return {data.text_column: text, **({data.text_pair_column: pair} if pair is not None else {})}

    def _check_columns_in_rows(self, rows: list[dict]) -> None:
        for key in ("text_column", "text_pair_column"):
            column = getattr(self.cfg.data, key)
            if column is not None and any(column not in r for r in rows):
                raise LmtuneError(f"input rows need a {column!r} field (data.{key})")
