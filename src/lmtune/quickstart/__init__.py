"""`lmtune quickstart`: the seed example of transfer learning — sort product reviews into positive / neutral /
negative with the bundled MiniLM, three strategies side by side."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from lmtune.config import resolve_config
from lmtune.report import metrics_table
from lmtune.train import RunResult, train

DATA = Path(str(resources.files("lmtune.quickstart") / "data"))

STRATEGIES = {
    "freeze (head only)": {"name": "freeze"},
    "lora": {"name": "lora"},
    "p_tuning": {"name": "p_tuning", "init_text": "Is this product review positive, neutral or negative?"},
}


def quickstart_config(output: Path, method: dict, name: str) -> dict:
    return {
        "model": {"name": "minilm"},
        "data": {"train": str(DATA / "reviews_train.jsonl"), "test": str(DATA / "reviews_test.jsonl"),
                 "labels": ["negative", "neutral", "positive"]},
        "method": method,
        # 540 training reviews: a few more passes than the default 3 let every strategy settle.
        "train": {"epochs": 6},
        "output": {"dir": str(output), "name": name, "overwrite": True},
    }


def run_quickstart(output: Path, overrides: list[str] | None = None) -> list[RunResult]:
    """Train the three strategies; `overrides` (a.b=c) apply to each run, e.g. model.name=smollm2."""
    results = []
    for label, method in STRATEGIES.items():
        name = label.split(" ")[0]
        print(f"\n=== quickstart: {label}", flush=True)
        results.append(train(resolve_config(quickstart_config(output, method, name), overrides)))
    model = results[0].config.model.name
    print(f"\nProduct reviews (positive / neutral / negative), {model}, held-out test set of 120 reviews:\n")
    print(metrics_table({label: r.metrics for label, r in zip(STRATEGIES, results)}))
    print(f"\nRuns are in {output}/ — try: lmtune predict {results[1].run_dir} --text \"The battery died after two days\"")
    return results
