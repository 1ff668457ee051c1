"""MiniLM on SST-2: every strategy with lmtune's defaults, one seed each, against a TF-IDF baseline.

    python benchmarks/classification.py [--train-size 2000] [--only lora,full] [--out benchmarks/out/classification]

Each strategy trains in its own process (`lmtune train`), so peak RSS is that run's alone. Writes
`<out>/results.json` and a markdown table to stdout; paste it into benchmarks/RESULTS.md with the machine line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from lmtune.report import metrics_table

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue_sst2"
# Strategy name → overrides. Defaults everywhere else: the point is what lmtune does out of the box.
STRATEGIES: dict[str, list[str]] = {
    "full": ["method.name=full"],
    "freeze (head only)": ["method.name=freeze"],
    "freeze (last 2 blocks)": ["method.name=freeze", "method.train_last_layers=2"],
    "lora": ["method.name=lora"],
    "bottleneck series": ["method.name=bottleneck"],
    "bottleneck parallel": ["method.name=bottleneck", "method.kind=parallel"],
    "prompt_tuning": ["method.name=prompt_tuning"],
    "p_tuning": ["method.name=p_tuning"],
    "prefix_tuning": ["method.name=prefix_tuning"],
    "peft IA3": ["method.name=peft", "method.peft_type=IA3"],
}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def tfidf_baseline(train_size: int, seed: int) -> dict:
    """Word+char TF-IDF + logistic regression on the same 2,000 sentences (the classical bar to beat)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline, make_union

    def read(name):
        with open(DATA / name, encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]

    texts, labels = read("train.tsv")
    index = list(range(len(texts)))
    _, sample = train_test_split(index, test_size=train_size, random_state=seed, stratify=labels)
    sample = sorted(sample)
    dev_x, dev_y = read("dev.tsv")
    started = time.perf_counter()
    features = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))
    clf = make_pipeline(features, LogisticRegression(max_iter=2000, C=4.0))
    clf.fit([texts[i] for i in sample], [labels[i] for i in sample])
    predicted = clf.predict(dev_x)
    return {"accuracy": accuracy_score(dev_y, predicted), "macro_f1": f1_score(dev_y, predicted, average="macro"),
            "train_seconds": time.perf_counter() - started, "trainable_params": None, "artifact_bytes": None,
            "peak_rss_mb": None, "roc_auc": None}


def run_strategy(label: str, overrides: list[str], out: Path, train_size: int, seed: int) -> dict:
    name = label.replace(" ", "_").replace("(", "").replace(")", "")
    command = [
        sys.executable, "-m", "lmtune", "train", "model.name=minilm",
        f"data.train={DATA / 'train.tsv'}", f"data.validation={DATA / 'dev.tsv'}", "data.text_column=sentence",
        f"data.max_train_samples={train_size}", f"train.seed={seed}", f"output.dir={out}", f"output.name={name}",
        "output.overwrite=true", *overrides,
    ]
    print(f"\n=== {label}: {' '.join(overrides)}", flush=True)
    subprocess.run(command, check=True)
    return json.loads((out / name / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", default="", help="comma-separated strategy labels (default: all)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/classification"))
    args = parser.parse_args()
    chosen = [s for s in STRATEGIES if not args.only or s in args.only.split(",")]
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results["TF-IDF + logistic regression"] = tfidf_baseline(args.train_size, args.seed)
    for label in chosen:
        results[label] = run_strategy(label, STRATEGIES[label], args.out, args.train_size, args.seed)
        args.out.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(results, indent=2))
    print(f"\nMachine: {machine()}; torch threads: {os.cpu_count()}\n")
    print(metrics_table(results, markdown=True))


if __name__ == "__main__":
    main()
