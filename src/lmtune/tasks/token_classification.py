"""Token classification (entity tagging such as NER): one tag per word, a linear head on every token's state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from seqeval.metrics import (
    accuracy_score,
    classification_report,
    f1_score,
    precision_score,
    recall_score,
)
from seqeval.metrics.sequence_labeling import get_entities
from torch import nn
from transformers import DataCollatorForTokenClassification
from transformers.modeling_outputs import TokenClassifierOutput

from lmtune.config.schema import TaskConfig
from lmtune.data.conll import (
    TAGS,
    TOKENS,
    check_tags,
    read_tagged_split,
    resolve_tag_set,
)
from lmtune.data.splits import Splits, split_off_validation, stratified_sample
from lmtune.device import to_model_device
from lmtune.errors import LmtuneError
from lmtune.evaluate.generation import length_batches
from lmtune.models.pooling import real_token_states
from lmtune.tasks.base import Task, TaskModel, register_task

IGNORE = -100
"""The label no loss or metric reads: special tokens, padding, and (by default) the later sub-tokens of a word."""
OUTSIDE = "O"


class TaggingHead(nn.Module):
    def __init__(self, hidden_size: int, num_tags: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_tags)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # fp32 weights on a bf16/fp16 base: the input is cast to them.
        return self.classifier(self.dropout(hidden.to(self.classifier.weight.dtype)))


class TokenTagger(TaskModel):
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **_: Any):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.body(**inputs).last_hidden_state
        # Prompt methods prepend virtual tokens: dropping them lines the logits up with the labels, whatever the strategy.
        logits = self.head(real_token_states(hidden, attention_mask))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        return TokenClassifierOutput(loss=loss, logits=logits)


class TokenClassificationConfig(TaskConfig):
    name: Literal["token_classification"] = "token_classification"
    """One tag per word (entity tagging, NER): CoNLL files (`token<TAB>tag` lines, a blank line between sentences)
    or jsonl/json rows holding a list of words and a list of tags."""
    tokens_column: str = "tokens"
    """jsonl/json input: the column with each sentence's words (a list of strings)."""
    tags_column: str = "tags"
    """jsonl/json input: the column with each sentence's tags (a list, one per word)."""
    label_all_subtokens: bool = False
    """Train on every sub-token of a word (later ones get its I- tag) instead of the first alone. Final metrics and
    predictions always read the first sub-token of each word."""


def align_labels(word_ids: list[int | None], tag_ids: list[int], continuation: dict[int, int] | None) -> list[int]:
    """Word tags → sub-token labels: the first sub-token of a word gets its tag; later ones get IGNORE, or with
    `continuation` (B- id → I- id) the word's tag as an inside tag; special tokens (no word) get IGNORE."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE)
        elif word != previous:
            labels.append(tag_ids[word])
        elif continuation is not None:
            labels.append(continuation.get(tag_ids[word], tag_ids[word]))
        else:
            labels.append(IGNORE)
        previous = word
    return labels


def continuation_ids(tags: list[str]) -> dict[int, int]:
    # A B- tag repeated on each sub-token would start a new entity at every one; later sub-tokens continue it.
    index = {tag: i for i, tag in enumerate(tags)}
    return {i: index[f"I-{tag[2:]}"] for i, tag in enumerate(tags) if tag.startswith("B-") and f"I-{tag[2:]}" in index}


def tag_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, Any]:
    """Entity-level micro precision/recall/F1, per-type scores and token accuracy. seqeval's default mode is
    conlleval's (the CoNLL shared tasks' scorer): an I- tag with no B- before it still starts an entity."""
    return {
        "precision": float(precision_score(gold, predicted, zero_division=0)),
        "recall": float(recall_score(gold, predicted, zero_division=0)),
        "f1": float(f1_score(gold, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(gold, predicted)),
        "per_type": per_type_scores(gold, predicted),
    }


def per_type_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, dict[str, float]]:
    if not get_entities(gold) and not get_entities(predicted):
        return {}  # seqeval's report averages over no types: NaN and warnings
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    return {
        kind: {"precision": float(s["precision"]), "recall": float(s["recall"]), "f1": float(s["f1-score"]), "support": int(s["support"])}
        for kind, s in report.items()
        if not kind.endswith(" avg")
    }


def entities(words: list[str], tags: list[str]) -> list[dict[str, Any]]:
    """Spans from IOB2 tags; `end` is exclusive (words[start:end] is the entity)."""
    return [
        {"type": kind, "start": start, "end": end + 1, "text": " ".join(words[start : end + 1])}
        for kind, start, end in get_entities(tags)
    ]


@register_task
class TokenClassificationTask(Task):
    name = "token_classification"
    config_cls = TokenClassificationConfig
    summary = "one tag per word (entity tagging, NER); a new linear head on every token"
    default_metric = "f1"
    headline_metric = "f1"
    checkpoint_metrics = ("f1", "precision", "recall", "accuracy", "loss")
    backbone_class = "AutoModel"
    default_max_length = 128

    @property
    def tags(self) -> list[str]:
        if not self.cfg.data.labels:
            raise RuntimeError("lmtune.runconfig.resolve() fills the tag set first")
        return self.cfg.data.labels

    def defaults(self) -> dict[str, Any]:
        # The resolved config records the tag order the head is built with (`O` first, then sorted).
        if self.cfg.data.labels:
            return super().defaults()
        return {**super().defaults(), "data.labels": resolve_tag_set(self._read_train()[TAGS], None)}

    def _read_train(self):
        if self.cfg.data.train is None:
            raise LmtuneError("no training data: set data.train to a CoNLL file (token<TAB>tag lines) or a jsonl file with tokens/tags lists")
        return self._read("train")

    def load_data(self) -> Splits:
        data, seed = self.cfg.data, self.cfg.train.seed
        train = self._read_train()
        check_tags(train, resolve_tag_set(train[TAGS], self.tags), "train")
        if data.max_train_samples:
            train = stratified_sample(train, _one_class(train), data.max_train_samples, seed)
        validation = self._read("validation")
        if validation is None:
            train, validation = split_off_validation(train, _one_class(train), data.validation_fraction, seed)
        test = self._read("test")
        return Splits(train, self._checked(validation, "validation"), None if test is None else self._checked(test, "test"))

    def _read(self, which: str):
        task = self.cfg.task
        return read_tagged_split(self.cfg.data, which, task.tokens_column, task.tags_column)

    def _checked(self, table, split_name: str):
        check_tags(table, self.tags, split_name)
        limit = self.cfg.data.max_eval_samples
        return table.select(range(min(limit, len(table)))) if limit else table

    def build_model(self, backbone) -> TokenTagger:
        return TokenTagger(backbone, TaggingHead(backbone.body.config.hidden_size, len(self.tags)))

    def _tokenize(self, words: list[list[str]], tokenizer):
        if not getattr(tokenizer, "is_fast", False):
            raise LmtuneError(
                f"token classification needs a fast tokenizer (it maps sub-tokens back to words); the tokenizer of "
                f"{self.cfg.model.name} ({type(tokenizer).__name__}) is not one"
            )
        return tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.cfg.model.max_length)

    def _aligner(self) -> Callable[[list[int | None], list[str]], list[int]]:
        index = {tag: i for i, tag in enumerate(self.tags)}
        continuation = continuation_ids(self.tags) if self.cfg.task.label_all_subtokens else None
        return lambda word_ids, tags: align_labels(word_ids, [index[t] for t in tags], continuation)

    def encode(self, table, tokenizer):
        align, lost = self._aligner(), [0]

        def encode_batch(rows: dict[str, list]) -> dict[str, list]:
            encoding = self._tokenize(rows[TOKENS], tokenizer)
            features = {k: v for k, v in encoding.items() if k in tokenizer.model_input_names}
            features["labels"] = [align(encoding.word_ids(i), tags) for i, tags in enumerate(rows[TAGS])]
            lost[0] += sum(len(words) - len(set(encoding.word_ids(i)) - {None}) for i, words in enumerate(rows[TOKENS]))
            return features

        encoded = table.map(encode_batch, batched=True, remove_columns=table.column_names)
        if lost[0]:
            print(f"{lost[0]} words lie beyond model.max_length={self.cfg.model.max_length} tokens and are cut off "
                  "(evaluation counts them as tagged O); raise model.max_length to keep them")
        return encoded

    def collator(self, tokenizer):
        return DataCollatorForTokenClassification(tokenizer)

    def compute_metrics(self, logits, label_ids) -> dict[str, Any]:
        # The Trainer pads logits and labels across batches with -100; only labelled positions are read.
        logits = logits[0] if isinstance(logits, tuple) else logits
        best, label_ids = np.asarray(logits).argmax(-1), np.asarray(label_ids)
        gold, predicted = [], []
        for row_best, row_gold in zip(best, label_ids):
            keep = row_gold != IGNORE
            gold.append([self.tags[i] for i in row_gold[keep]])
            predicted.append([self.tags[i] for i in row_best[keep]])
        return tag_metrics(gold, predicted)

    @torch.no_grad()
    def _tag_batch(self, model: TaskModel, words: list[list[str]], gold: list[list[str]] | None = None):
        """Predicted word tags for a batch, plus the summed loss and the number of labelled sub-tokens when `gold`."""
        tokenizer = model.tokenizer
        encoding = self._tokenize(words, tokenizer)
        features = [{k: encoding[k][i] for k in tokenizer.model_input_names if k in encoding} for i in range(len(words))]
        if gold is not None:
            align = self._aligner()
            for i, feature in enumerate(features):
                feature["labels"] = align(encoding.word_ids(i), gold[i])
        batch = self.collator(tokenizer)(features)
        output = model(**to_model_device(batch, model))
        best = output.logits.argmax(-1).cpu()
        predicted = []
        for i in range(len(words)):
            offset = best.size(1) - len(encoding["input_ids"][i]) if tokenizer.padding_side == "left" else 0
            predicted.append(self._word_tags(best[i, offset:].tolist(), encoding.word_ids(i), len(words[i])))
        labelled = int((batch["labels"] != IGNORE).sum()) if gold is not None else 0
        return predicted, float(output.loss) * labelled if labelled else 0.0, labelled

    def _word_tags(self, best: list[int], word_ids: list[int | None], count: int) -> list[str]:
        tags = [OUTSIDE] * count  # words cut off by truncation get no prediction: they count as outside
        seen: set[int] = set()
        for position, word in enumerate(word_ids):
            if word is not None and word not in seen:
                seen.add(word)
                tags[word] = self.tags[best[position]]
        return tags

    def evaluate(self, model: TaskModel, table, batch_size: int, quick: bool = False) -> dict[str, Any]:
        # Per batch, not the base's concatenated logits: sentences differ in length. Metrics read one tag per word of
        # the full gold sentence, so words lost to truncation count as missed, as conlleval would count them.
        model.eval()
        words, gold = table[TOKENS], table[TAGS]
        predicted: list = [None] * len(words)
        loss_sum, labelled = 0.0, 0
        for rows in length_batches([len(w) for w in words], batch_size, equal_lengths=False):  # little padding
            tags, loss, count = self._tag_batch(model, [words[i] for i in rows], [gold[i] for i in rows])
            for i, row_tags in zip(rows, tags):
                predicted[i] = row_tags
            loss_sum, labelled = loss_sum + loss, labelled + count
        metrics = tag_metrics(gold, predicted)
        metrics.update(loss=loss_sum / max(labelled, 1), rows=len(words))
        metrics["predictions"] = [{"tokens": w, "gold": g, "predicted": p} for w, g, p in zip(words, gold, predicted)]
        return metrics

    def predict(self, model: TaskModel, rows: list[dict], batch_size: int = 64) -> list[dict]:
        model.eval()
        words = [self._row_words(row, number) for number, row in enumerate(rows, start=1)]
        results = []
        for start in range(0, len(words), batch_size):
            chunk = words[start : start + batch_size]
            tags, _, _ = self._tag_batch(model, chunk)
            results += [{"tokens": w, "tags": t, "entities": entities(w, t)} for w, t in zip(chunk, tags)]
        return results

    def _row_words(self, row: dict, number: int) -> list[str]:
        tokens_column, text_column = self.cfg.task.tokens_column, self.cfg.data.text_column
        if isinstance(row.get(tokens_column), list):
            words = [str(w) for w in row[tokens_column]]
        elif isinstance(row.get(text_column), str):
            words = row[text_column].split()  # plain text: words are what whitespace separates
        else:
            raise LmtuneError(f"input row {number} needs a list of words under {tokens_column!r} or a text under {text_column!r}")
        if not words:
            raise LmtuneError(f"input row {number} has no words to tag")
        return words


def _one_class(table) -> list[str]:
    # Stratifying sentences by tag means little; one class makes the seeded split plain.
    return ["sentence"] * len(table)
