"""TF-IDF features and logistic regression (scikit-learn): the classical bar a fine-tuned model should clear.

Word n-grams catch phrases, character n-grams (within word boundaries) catch word forms and typos; either can be
switched off. Classification only: there is no bag-of-words answer to generating text or tagging tokens.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from lmtune.baselines.base import (
    Baseline,
    BaselineConfig,
    evaluation_splits,
    register_baseline,
)
from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import classification_metrics
from lmtune.runconfig import RunConfig
from lmtune.train.memory import PeakMemory

PAIR_SEPARATOR = " || "
"""Joins the two texts of a pair. Word features ignore it; character n-grams see it, so the boundary leaves a
trace. (A bag of words cannot compare the two texts anyway: pair tasks are where this baseline is weakest.)"""


class TfidfConfig(BaselineConfig):
    name: Literal["tfidf"] = "tfidf"
    """TF-IDF + logistic regression on the task's training data (classification only)."""
    word_ngrams: tuple[int, int] | None = (1, 2)
    """Word n-gram lengths [shortest, longest]; none: no word features."""
    char_ngrams: tuple[int, int] | None = (2, 5)
    """Character n-gram lengths [shortest, longest], within word boundaries; none: no character features."""
    stop_words: Literal["none", "english"] = "none"
    """`english`: drop scikit-learn's English stop words from the word features (character n-grams keep them).
    Off by default: stop words such as "not" carry sentiment."""
    max_features: int | None = Field(None, gt=0)
    """Keep at most this many n-grams of each kind (the most frequent); none keeps every one."""
    sublinear_tf: bool = True
    """Count terms as 1 + log(frequency), so a word repeated ten times does not weigh ten times as much."""
    C: float = Field(4.0, gt=0)
    """Inverse regularisation strength of the logistic regression: larger fits the training data more closely."""
    max_iter: int = Field(2000, gt=0)
    """Iterations the logistic regression's solver may take."""

    @field_validator("word_ngrams", "char_ngrams")
    @classmethod
    def _ordered_range(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not 1 <= value[0] <= value[1]:
            raise ValueError(f"an n-gram range is [shortest, longest] with 1 <= shortest <= longest; got {list(value)}")
        return value

    @model_validator(mode="after")
    def _some_features(self) -> TfidfConfig:
        if self.word_ngrams is None and self.char_ngrams is None:
            raise ValueError("word_ngrams and char_ngrams are both none: set at least one n-gram range")
        return self


@register_baseline
class Tfidf(Baseline):
    name = "tfidf"
    config_cls = TfidfConfig
    summary = "TF-IDF word and character n-grams + logistic regression (classification)"

    def check_task(self, task) -> None:
        from lmtune.tasks.classification import ClassificationTask

        if not issubclass(task, ClassificationTask):
            raise LmtuneError(
                f"the tfidf baseline classifies texts: it needs task.name=classification, not {task.name}; "
                "drop it from this comparison (prompting and scratch work for every task)"
            )

    def run(self, run_cfg: RunConfig, out_dir: Path) -> dict[str, Any]:
        cfg, task, splits = self.prepare(run_cfg, out_dir)
        self.write_config(cfg, out_dir)
        texts, label_ids = _texts_and_ids(cfg, task.labels, splits.train)
        with PeakMemory() as peak:
            started = time.perf_counter()
            model = self.fit(texts, label_ids)
            train_seconds = time.perf_counter() - started
            by_split = {name: self.evaluate(model, cfg, task.labels, table) for name, table in evaluation_splits(splits).items()}
        classifier = model.steps[-1][1]
        coefficients = int(classifier.coef_.size + classifier.intercept_.size)
        return self.finish(
            out_dir, by_split, trainable_params=coefficients, total_params=coefficients,
            artifact_bytes=0,  # nothing is saved: the fitted pipeline lives only for this evaluation
            train_seconds=train_seconds, peak_rss_mb=peak.mb, features=int(classifier.coef_.shape[-1]),
        )

    def pipeline(self):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline, make_union

        c = self.cfg
        vectorizers = []
        if c.word_ngrams:
            stop_words = None if c.stop_words == "none" else c.stop_words
            vectorizers.append(TfidfVectorizer(ngram_range=tuple(c.word_ngrams), stop_words=stop_words,
                                               max_features=c.max_features, sublinear_tf=c.sublinear_tf))
        if c.char_ngrams:
            vectorizers.append(TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(c.char_ngrams),
                                               max_features=c.max_features, sublinear_tf=c.sublinear_tf))
        return make_pipeline(make_union(*vectorizers), LogisticRegression(C=c.C, max_iter=c.max_iter))

    def fit(self, texts: list[str], label_ids: np.ndarray):
        if len(set(label_ids.tolist())) < 2:
            raise LmtuneError("the training data holds a single label; a classifier needs at least two")
        try:
            return self.pipeline().fit(texts, label_ids)
        except ValueError as err:  # e.g. every word is a stop word: an empty vocabulary
            raise LmtuneError(f"tfidf cannot fit this data: {err}; try stop_words=none or character n-grams") from None

    def evaluate(self, model, cfg: RunConfig, labels: list[str], table) -> dict[str, Any]:
        texts, label_ids = _texts_and_ids(cfg, labels, table)
        probs = full_probabilities(model.predict_proba(texts), model.classes_, len(labels))
        metrics = classification_metrics(label_ids, probs, labels)
        metrics["loss"] = log_loss(probs, label_ids)
        metrics["rows"] = len(label_ids)
        return metrics


def _texts_and_ids(cfg: RunConfig, labels: list[str], table) -> tuple[list[str], np.ndarray]:
    data = cfg.data
    texts = [str(t) for t in table[data.text_column]]
    if data.text_pair_column:
        texts = [f"{a}{PAIR_SEPARATOR}{b}" for a, b in zip(texts, table[data.text_pair_column])]
    index = {label: i for i, label in enumerate(labels)}
    return texts, np.array([index[str(v)] for v in table[data.label_column]])


def full_probabilities(probs: np.ndarray, classes: np.ndarray, count: int) -> np.ndarray:
    """One column per label of the task, in its order: a label absent from the training data gets probability 0."""
    full = np.zeros((probs.shape[0], count))
    full[:, classes] = probs
    return full


def log_loss(probs: np.ndarray, label_ids: np.ndarray) -> float:
    """Mean cross-entropy of the true labels: the `loss` a trained classifier reports."""
    chosen = probs[np.arange(len(label_ids)), label_ids]
    return float(-np.log(np.clip(chosen, 1e-12, None)).mean())
