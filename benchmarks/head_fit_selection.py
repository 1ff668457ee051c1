"""Replay the head fit's L2 grid on a finished head-only run's cached features and show, per penalty, the
validation accuracy, macro-F1 and loss beside the test macro-F1 and accuracy: how the selection rule was chosen
(benchmarks/RESULTS.md, "Quality", footnote 1).

    python benchmarks/head_fit_selection.py benchmarks/out/quality/sst2-seed42/head-only [more run dirs]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from sklearn.metrics import f1_score

from lmtune.train.artifacts import load_run
from lmtune.train.features import compute_features
from lmtune.train.head_fit import L2_GRID, _lbfgs, _validation_scores


def replay(run_dir: Path) -> None:
    loaded = load_run(run_dir)
    task, model = loaded.task, loaded.model
    splits = task.load_data()

    def cached(split: str):
        features = load_file(str(run_dir / "features" / f"{split}.safetensors"))["features"]
        return features, torch.tensor(task.encode(getattr(splits, split), model.tokenizer)["labels"])

    (x, y), (x_val, y_val) = cached("train"), cached("validation")
    test = task.encode(splits.test, model.tokenizer)
    x_test = compute_features(model, test, task.collator(model.tokenizer), 32)
    model.eval()
    for l2 in L2_GRID:
        _lbfgs(model.head, x, y, l2, None)
        scores = _validation_scores(task, model.head, x_val, y_val)
        with torch.no_grad():
            predicted = model.head.classify(x_test).argmax(-1).numpy()
        test_f1 = f1_score(test["labels"], predicted, average="macro")
        test_accuracy = float((predicted == torch.tensor(test["labels"]).numpy()).mean())
        print(f"{run_dir.parent.name} L2 {l2:.0e}: validation accuracy {scores['accuracy']:.3f} macro-F1 "
              f"{scores['macro_f1']:.3f} loss {scores['loss']:.3f} | test macro-F1 {test_f1:.3f} accuracy {test_accuracy:.3f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    for folder in sys.argv[1:]:
        replay(Path(folder))
