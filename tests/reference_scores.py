"""Scores recomputed from a run's saved predictions by other code than lmtune's, so a test can check the numbers in
metrics.json rather than only their range."""

from __future__ import annotations

import json
import re
from pathlib import Path

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def read_predictions(run_dir: Path, metrics: dict) -> list[dict]:
    lines = (Path(run_dir) / metrics["predictions_file"]).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def number_answers(predictions: list[dict], tolerance: float = 1e-3) -> dict:
    """LLM-Adapters' rule for math answers, by a plain regex: the last number of the generation, right when it is
    within `tolerance` of the gold number. Returns accuracy, correct and no_answer as metrics.json names them."""
    last = [NUMBER.findall(p["generation"])[-1:] for p in predictions]
    correct = sum(bool(n) and abs(float(n[0]) - float(p["gold"])) < tolerance for n, p in zip(last, predictions))
    return {"accuracy": correct / len(predictions), "correct": correct, "no_answer": sum(not n for n in last)}


def sacrebleu_scores(predictions: list[dict]) -> dict[str, float]:
    """BLEU, chrF and TER from sacrebleu directly, on the saved translations and references."""
    from sacrebleu import corpus_bleu, corpus_chrf, corpus_ter

    hypotheses, references = [p["translation"] for p in predictions], [[p["reference"] for p in predictions]]
    return {"bleu": corpus_bleu(hypotheses, references).score, "chrf": corpus_chrf(hypotheses, references).score,
            "ter": corpus_ter(hypotheses, references).score}


def seqeval_scores(predictions: list[dict]) -> dict[str, float]:
    """Entity-level micro scores from seqeval directly, on the saved gold and predicted tags."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    gold, predicted = [p["gold"] for p in predictions], [p["predicted"] for p in predictions]
    return {"precision": precision_score(gold, predicted, zero_division=0),
            "recall": recall_score(gold, predicted, zero_division=0), "f1": f1_score(gold, predicted, zero_division=0)}


def from_confusion_matrix(matrix: list[list[int]]) -> dict[str, float]:
    """Accuracy and macro-F1 by scikit-learn from the (true, predicted) pairs the confusion matrix counts."""
    from sklearn.metrics import accuracy_score, f1_score

    pairs = [(t, p) for t, row in enumerate(matrix) for p, count in enumerate(row) for _ in range(count)]
    true, predicted = [t for t, _ in pairs], [p for _, p in pairs]
    every = list(range(len(matrix)))
    return {"accuracy": accuracy_score(true, predicted),
            "macro_f1": f1_score(true, predicted, average="macro", labels=every, zero_division=0)}
