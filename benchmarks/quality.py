"""Every strategy with its defaults against TF-IDF and against a logistic regression on the same frozen features.

    nice -n 10 python benchmarks/quality.py [--sets quickstart,sst2,trec,mrpc] [--seeds 42,43,44]
        [--strategies "head only,lora,p_tuning,prompt_tuning"] [--out benchmarks/out/quality]

Sets: the quickstart reviews (`lmtune quickstart`'s data and epochs), SST-2 (2,000 training sentences, the 872 dev
sentences as test), TREC-6 (2,000 of the 5,452 training questions, the 500 test questions), MRPC (2,000 training
pairs, the 408 dev pairs as test), all from ../shared/data. Each set (and each quickstart seed) is one `lmtune
compare` run in its own process: the strategies with lmtune's defaults and the tfidf baseline, with one torch
thread. The logistic regression (scikit-learn, C=1) is fitted on the head-only run's own cached training features
(the very rows and vectors the L-BFGS head saw) and scored on the same test features. Resumable: finished entries
are not re-run. Writes `<out>/results.json` and prints markdown tables for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
QUICKSTART = ROOT / "src" / "lmtune" / "quickstart" / "data"
TRAIN_CAP = 2000
STRATEGIES: dict[str, list[str]] = {
    "head only": ["method.name=freeze"],
    "head only (Trainer)": ["method.name=freeze", "train.head_fit=trainer"],
    "lora": ["method.name=lora"],
    "p_tuning": ["method.name=p_tuning"],
    "prompt_tuning": ["method.name=prompt_tuning"],
    "full": ["method.name=full"],
    "bottleneck": ["method.name=bottleneck"],
    "prefix_tuning": ["method.name=prefix_tuning"],
}
REFERENCES = {"head only (Trainer)"}
"""Slow references: run with the first seed only (they say how much faster and better the default is)."""


def _sample(rows: list[dict], seed: int = 0) -> list[dict]:
    """At most TRAIN_CAP rows, the same ones for every strategy (label proportions kept by shuffling per label)."""
    if len(rows) <= TRAIN_CAP:
        return rows
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    rng, picked = random.Random(seed), []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        picked += group[: round(TRAIN_CAP * len(group) / len(rows))]
    rng.shuffle(picked)
    return picked[:TRAIN_CAP]


def _tsv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def _trec(path: Path) -> list[dict]:
    lines = path.read_bytes().decode("latin-1").splitlines()  # one stray 0xF0 byte in train
    return [{"text": line.split(" ", 1)[1], "label": line.split(":", 1)[0]} for line in lines if line.strip()]


def _write(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def prepare(name: str, out: Path) -> dict:
    """The set's data section (files written under out/data) and any set-specific train settings."""
    folder = out / "data" / name
    if name == "quickstart":
        config = yaml.safe_load((QUICKSTART / "quickstart.yaml").read_text())["base"]
        return {"data": {"train": str(QUICKSTART / "reviews_train.jsonl"), "test": str(QUICKSTART / "reviews_test.jsonl"),
                         "labels": config["data"]["labels"]}, "train": config.get("train", {})}
    if name == "sst2":
        train = [{"text": r["sentence"], "label": r["label"]} for r in _tsv(SHARED / "glue_sst2" / "train.tsv")]
        test = [{"text": r["sentence"], "label": r["label"]} for r in _tsv(SHARED / "glue_sst2" / "dev.tsv")]
        data = {}
    elif name == "trec":
        train, test = _trec(SHARED / "trec" / "train_5500.label"), _trec(SHARED / "trec" / "TREC_10.label")
        data = {}
    elif name == "mrpc":
        def pairs(file):
            return [{"text": r["#1 String"], "pair": r["#2 String"], "label": r["Quality"]}
                    for r in _tsv(SHARED / "glue_mrpc" / file)]
        train, test = pairs("train.tsv"), pairs("dev.tsv")
        data = {"text_pair_column": "pair"}
    else:
        raise SystemExit(f"unknown set {name!r}: quickstart, sst2, trec, mrpc")
    return {"data": {"train": _write(folder / "train.jsonl", _sample(train)), "test": _write(folder / "test.jsonl", test),
                     **data}, "train": {}}


def run_set(name: str, seed: int, strategies: list[str], out: Path) -> Path:
    """One `lmtune compare` over the set: the strategies and the tfidf baseline."""
    setting = prepare(name, out)
    folder = out / f"{name}-seed{seed}"
    config = {
        "base": {"model": {"name": "minilm"}, "data": setting["data"],
                 "train": {**setting["train"], "seed": seed, "num_threads": 1}},
        "strategies": [{"name": s, "overrides": STRATEGIES[s]} for s in strategies],
        "baselines": [{"name": "tfidf"}],
        "output": {"dir": str(folder), "title": f"{name}, seed {seed}"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "quality.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lmtune", "compare", str(folder / "quality.yaml")], check=True,
                   stdout=open(folder / "compare.log", "a"), stderr=subprocess.STDOUT)
    print(f"{name} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def features_baseline(run_dir: Path) -> dict:
    """scikit-learn's logistic regression (C=1) on the head-only run's cached training features, scored on the
    test split's features computed the same way (lmtune's features(): the model's own pooling)."""
    import torch
    from safetensors.torch import load_file
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from lmtune.train.artifacts import load_run
    from lmtune.train.features import compute_features

    torch.set_num_threads(1)
    loaded = load_run(run_dir)
    task, model = loaded.task, loaded.model
    splits = task.load_data()
    x_train = load_file(str(run_dir / "features" / "train.safetensors"))["features"].numpy()
    y_train = task.encode(splits.train, model.tokenizer)["labels"]
    test = task.encode(splits.test, model.tokenizer)
    x_test = compute_features(model, test, task.collator(model.tokenizer), 64).numpy()
    started = time.perf_counter()
    clf = LogisticRegression(max_iter=5000).fit(x_train, y_train)
    seconds = time.perf_counter() - started
    predicted = clf.predict(x_test)
    return {"accuracy": float(accuracy_score(test["labels"], predicted)),
            "macro_f1": float(f1_score(test["labels"], predicted, average="macro")), "fit_seconds": round(seconds, 2)}


def collect(folder: Path) -> dict:
    rows = json.loads((folder / "leaderboard.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    result = {r["name"]: {k: r.get(k) for k in ("macro_f1", "accuracy", "train_seconds", "status")} for r in rows}
    head = folder / "head-only"
    if (head / "metrics.json").is_file() and (head / "features" / "train.safetensors").is_file():
        result["logistic regression on the frozen features"] = features_baseline(head)
    return result


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, no GPU, 1 torch thread, Python {platform.python_version()}"


def tables(results: dict) -> str:
    lines = []
    for name, by_seed in results.items():
        names = list(next(iter(by_seed.values())))
        lines += [f"\n### {name} (macro-F1; train seconds)\n", "| entry | macro-F1 | accuracy | train s |", "|---|---|---|---|"]
        for entry in names:
            f1 = [s[entry]["macro_f1"] for s in by_seed.values() if s.get(entry, {}).get("macro_f1") is not None]
            acc = [s[entry]["accuracy"] for s in by_seed.values() if s.get(entry, {}).get("accuracy") is not None]
            secs = [s[entry].get("train_seconds") for s in by_seed.values() if s.get(entry, {}).get("train_seconds")]
            lines.append(f"| {entry} | {_spread(f1)} | {_spread(acc)} | {_spread(secs, 0)} |")
    return "\n".join(lines)


def _spread(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", default="quickstart,sst2,trec,mrpc")
    parser.add_argument("--seeds", default="42,43,44", help="quickstart seeds (the other sets take the first)")
    parser.add_argument("--strategies", default="head only,head only (Trainer),lora,p_tuning,prompt_tuning")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "quality")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    strategies = args.strategies.split(",")
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for name in args.sets.split(","):
        for seed in seeds if name == "quickstart" else seeds[:1]:
            chosen = [s for s in strategies if seed == seeds[0] or s not in REFERENCES]
            folder = run_set(name, seed, chosen, args.out)
            earlier = results.setdefault(name, {}).get(str(seed), {})
            results[name][str(seed)] = {**earlier, **collect(folder)}  # entries of an earlier pass stay
            results_file.write_text(json.dumps(results, indent=2))
    print(f"\nMachine: {machine()}")
    print(tables(results))


if __name__ == "__main__":
    main()
