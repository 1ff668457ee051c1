"""Generative and tagging tasks on the bundled models, with the untuned model's score beside each tuned one.

    python benchmarks/generative.py [math] [commonsense] [translation] [tagging] [--out benchmarks/out/generative]
                                    [--math-train 400] [--math-eval 30] [--cs-set boolq] [--cs-train 600]
                                    [--cs-eval 200] [--mt-train 2000] [--mt-eval 200]

Every step is an `lmtune` command line (printed before it runs), so each number can be reproduced alone; a step
whose output exists is skipped, so a killed benchmark continues where it stopped. Writes `<out>/results.json`
and markdown tables to stdout for benchmarks/RESULTS.md. Slices are the first N rows of each test set
(`--max-samples`), training slices a seeded sample (`data.max_train_samples`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SUITE = SHARED / "llm_adapters" / "dataset"
SMOL_TRAIN = ["model.name=smollm2", "task.name=instruction", "train.batch_size=8", "train.gradient_accumulation_steps=2",
              "train.progress=false", "data.max_eval_samples=8"]
METHODS = {"lora": ["method.name=lora"], "p_tuning": ["method.name=p_tuning"]}


THREADS: list[str] = []  # `--threads N`: torch threads of every step (two benchmarks side by side: 1 each)


def lmtune(args: list[str], done: Path) -> None:
    if done.exists():
        print(f"skip (done): {done}")
        return
    threads = [f"train.num_threads={THREADS[0]}"] if THREADS and args[0] == "train" else []
    command = [sys.executable, "-m", "lmtune.cli", *args, *threads]
    print("$ lmtune " + " ".join(args + threads), flush=True)
    started = time.perf_counter()
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **({"OMP_NUM_THREADS": THREADS[0]} if THREADS else {})}
    subprocess.run(command, check=True, env=env)
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)


def suite_eval(target: list[str], sets: str, rows: int, out: Path, extra: list[str]) -> dict:
    args = ["eval", *target, "--task", "llm_adapters", "--datasets", sets, "--max-samples", str(rows), *extra]
    lmtune(args, out / "predictions" / "llm_adapters.json")
    return {name: m["accuracy"] for name, m in json.loads((out / "predictions" / "llm_adapters.json").read_text())["sets"].items()}


def suite_study(name: str, train_file: Path, sets: str, args, out: Path, train_rows: int, eval_rows: int,
                gen: list[str], epochs: int) -> dict:
    """Zero-shot base, then LoRA and p-tuning trained on `train_file`, each evaluated on `sets`."""
    results = {"zero-shot": suite_eval(["--base", "smollm2", "--output", str(out / "zero-shot")], sets, eval_rows,
                                       out / "zero-shot", gen)}
    for method, overrides in METHODS.items():
        run = out / method
        lmtune(["train", *SMOL_TRAIN, *overrides, *gen, f"data.train={train_file}", f"data.max_train_samples={train_rows}",
                f"train.epochs={epochs}", f"output.dir={out}", f"output.name={method}"], run / "metrics.json")
        results[method] = suite_eval([str(run)], sets, eval_rows, run, gen)
        results[method]["train_seconds"] = json.loads((run / "metrics.json").read_text())["train_seconds"]
    return results


def translation_study(args, out: Path) -> dict:
    data = SHARED / "multi30k_en_de"
    common = ["task.name=translation", f"data.train={data / 'train'}", f"data.validation={data / 'val'}",
              f"data.test={data / 'test_2016_flickr'}", f"data.max_eval_samples={args.mt_eval}", "train.progress=false"]
    lmtune(["eval", "--base", "smollm2", "--split", "test", "--output", str(out / "zero-shot"), *common],
           out / "zero-shot" / "metrics-test.json")
    lmtune(["train", *common, "model.name=smollm2", "method.name=lora", f"data.max_train_samples={args.mt_train}",
            "train.epochs=1", "train.batch_size=16", f"output.dir={out}", "output.name=lora"], out / "lora" / "metrics.json")
    before = json.loads((out / "zero-shot" / "metrics-test.json").read_text())
    after = json.loads((out / "lora" / "metrics.json").read_text())
    pick = lambda m: {k: m[k] for k in ("bleu", "chrf", "ter", "bleu_signature", "rows")}  # noqa: E731
    return {"zero-shot": pick(before), "lora": {**pick(after), "train_seconds": after["train_seconds"]}}


def tagging_study(args, out: Path) -> dict:
    data = SHARED / "wnut17"
    common = ["model.name=minilm", "task.name=token_classification", f"data.train={data / 'train.conll'}",
              f"data.validation={data / 'dev.conll'}", f"data.test={data / 'test.conll'}", "train.progress=false",
              f"train.epochs={args.tag_epochs}", f"output.dir={out}"]
    variants = {"full": ["method.name=full"], "lora": ["method.name=lora"],
                "freeze (last 2 blocks)": ["method.name=freeze", "method.train_last_layers=2"]}
    results = {}
    for name, overrides in variants.items():
        run = out / name.split()[0]
        lmtune(["train", *common, *overrides, f"output.name={run.name}"], run / "metrics.json")
        m = json.loads((run / "metrics.json").read_text())
        results[name] = {k: m[k] for k in ("f1", "precision", "recall", "trainable_params", "train_seconds")}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="*", default=["math", "commonsense", "translation", "tagging"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/generative"))
    parser.add_argument("--math-train", type=int, default=320)
    parser.add_argument("--math-eval", type=int, default=30)
    parser.add_argument("--math-epochs", type=int, default=1)
    parser.add_argument("--cs-set", default="boolq", choices=["boolq", "ARC-Easy"])
    parser.add_argument("--cs-train", type=int, default=600)
    parser.add_argument("--cs-eval", type=int, default=200)
    parser.add_argument("--mt-train", type=int, default=1000)
    parser.add_argument("--mt-eval", type=int, default=100)
    parser.add_argument("--tag-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads per step (default: all cores)")
    args = parser.parse_args()
    if args.threads:
        THREADS.append(str(args.threads))
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    studies = {
        "math": lambda: suite_study("math", SHARED / "llm_adapters" / "ft-training_set" / "math_data.json",
                                    "gsm8k,SVAMP,mawps", args, args.out / "math", args.math_train, args.math_eval,
                                    ["task.generation.max_new_tokens=200"], args.math_epochs),
        "commonsense": lambda: suite_study(args.cs_set, SUITE / args.cs_set / "train.json", args.cs_set, args,
                                           args.out / args.cs_set, args.cs_train, args.cs_eval,
                                           ["task.generation.max_new_tokens=16"], 1),
        "translation": lambda: translation_study(args, args.out / "translation"),
        "tagging": lambda: tagging_study(args, args.out / "tagging"),
    }
    for study in args.studies:
        results[study] = studies[study]()
        args.out.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
