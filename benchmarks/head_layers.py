"""Which hidden layers a head on a frozen MiniLM should read: the last k layers, each mean-pooled, concatenated.

    python benchmarks/head_layers.py [--sets quickstart,sst2,trec,mrpc] [--layers 1,2,4,7] [--seeds 42,43,44]

The sets and their training rows are benchmarks/quality.py's. The features are computed once per set with
transformers (every hidden layer, mean-pooled over the real tokens, as lmtune's MiniLM head pools); the head is
fitted as train/head_fit.py fits it, emulated with scikit-learn: a logistic regression on 90% of the training rows
for each L2 penalty of head_fit.L2_GRID (sklearn's C = 1 / (penalty · rows) for lmtune's mean cross-entropy
+ penalty/2 · ||W||²), the one with the lowest loss on the other 10% kept, scored by test macro-F1; mean ± spread
over the seeds of the 90/10 split. `raw` is what lmtune fits; `standardised` scales each feature to unit variance
first (not used by lmtune: +0.3 to +1.4 points here, within the spread on two sets). One torch thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (the sets)
from lmtune.train.head_fit import L2_GRID  # noqa: E402


def layer_features(rows: list[dict], pair: bool, tokenizer, model) -> np.ndarray:
    """[rows, layers, hidden]: every hidden layer (the embeddings first) mean-pooled over the real tokens."""
    out = []
    for start in range(0, len(rows), 32):
        batch = rows[start:start + 32]
        encoded = tokenizer([r["text"] for r in batch], [r["pair"] for r in batch] if pair else None, padding=True,
                            truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            states = model(**encoded, output_hidden_states=True).hidden_states
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        out.append(torch.stack([(h * mask).sum(1) / mask.sum(1) for h in states], 1))
    return torch.cat(out).numpy()


def fitted_f1(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int, standardise: bool) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, log_loss
    from sklearn.model_selection import train_test_split

    fit_x, val_x, fit_y, val_y = train_test_split(x, y, test_size=0.1, stratify=y, random_state=seed)
    if standardise:
        mean, scale = fit_x.mean(0), fit_x.std(0) + 1e-6
        fit_x, val_x, x_test = (fit_x - mean) / scale, (val_x - mean) / scale, (x_test - mean) / scale
    best = None
    for penalty in L2_GRID:
        head = LogisticRegression(C=1 / (penalty * len(fit_x)), max_iter=2000).fit(fit_x, fit_y)
        loss = log_loss(val_y, head.predict_proba(val_x), labels=head.classes_)
        if best is None or loss < best[0]:
            best = (loss, head)
    return float(f1_score(y_test, best[1].predict(x_test), average="macro"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="quickstart,sst2,trec,mrpc")
    parser.add_argument("--layers", default="1,2,4,7")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--out", default="benchmarks/out/head_layers")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from transformers import AutoModel, AutoTokenizer

    from lmtune.config.schema import ModelConfig
    from lmtune.models.loading import resolve_model_path

    path = resolve_model_path(ModelConfig(name="minilm"))
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    out = Path(args.out)
    layer_counts, seeds = [int(k) for k in args.layers.split(",")], [int(s) for s in args.seeds.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    print("| set | " + " | ".join(f"last {k} ({kind})" for k in layer_counts for kind in ("raw", "standardised")) + " |")
    print("|---" * (1 + 2 * len(layer_counts)) + "|")
    for name in args.sets.split(","):
        setting = quality.prepare(name, out)
        def rows(key):
            return [json.loads(line) for line in open(setting["data"][key], encoding="utf-8")]
        train, test = rows("train"), rows("test")
        pair = "text_pair_column" in setting["data"]
        features, test_features = layer_features(train, pair, tokenizer, model), layer_features(test, pair, tokenizer, model)
        y, y_test = np.array([str(r["label"]) for r in train]), np.array([str(r["label"]) for r in test])
        cells = []
        for k in layer_counts:
            x, x_test = features[:, -k:].reshape(len(train), -1), test_features[:, -k:].reshape(len(test), -1)
            for standardise in (False, True):
                scores = [fitted_f1(x, y, x_test, y_test, seed, standardise) for seed in seeds]
                cells.append(f"{np.mean(scores):.3f} ± {np.std(scores):.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
