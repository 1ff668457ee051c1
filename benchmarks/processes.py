"""One run as one process and as two (torchrun, accelerate launch) on a tiny random BERT, CPU/gloo (issue 15):
validation loss, logged training loss, wall time of each launch, and how fast a refused config ends both ranks.

    OMP_NUM_THREADS=1 python benchmarks/processes.py [--steps 12]

Prints one JSON object. The global batch is 16 in every run (one process × 16, two × 8).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORDS = {"pos": "great excellent lovely superb".split(), "neg": "awful bad terrible poor".split()}
FILLER = "the a this product item it was is very really quite and so".split()


def rows(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        label = "pos" if i % 2 else "neg"
        words = rng.choices(FILLER, k=rng.randint(3, 8)) + [rng.choice(WORDS[label])]
        rng.shuffle(words)
        out.append({"text": " ".join(words), "label": label})
    return out


def setup(folder: Path, steps: int) -> Path:
    from lmtune.models.tiny import build_tiny_model

    data = {}
    for split, count, seed in (("train", 192, 1), ("validation", 64, 2)):
        data[split] = folder / f"{split}.jsonl"
        data[split].write_text("".join(json.dumps(r) + "\n" for r in rows(count, seed)))
    model = build_tiny_model("bert", folder / "bert", [r["text"] for r in rows(192, 1)])
    config = {"model": {"name": str(model), "max_length": 32},
              "data": {k: str(v) for k, v in data.items()},
              "method": {"name": "lora", "rank": 2},
              "train": {"batch_size": 16, "max_steps": steps, "eval_every": "no", "logging_steps": 2,
                        "progress": False, "num_threads": 1},
              "output": {"dir": str(folder / "runs")}}
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(command: list[str], log: Path, watch: str | None = None) -> tuple[int, float, float | None]:
    """Exit status, wall seconds, and (with `watch`) seconds from the first line holding it to the exit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    started, seen = time.perf_counter(), None
    with log.open("w") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
        while process.poll() is None:
            if watch and seen is None and watch in log.read_text():
                seen = time.perf_counter()
            time.sleep(0.05)
    ended = time.perf_counter()
    return process.returncode, round(ended - started, 1), round(ended - seen, 2) if seen else None


def result(folder: Path, name: str, code: int, seconds: float, _: float | None = None) -> dict:
    run = folder / "runs" / name
    if code != 0:
        return {"exit": code, "seconds": seconds}
    metrics = json.loads((run / "metrics.json").read_text())
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return {"exit": code, "seconds": seconds, "validation_loss": round(metrics["splits"]["validation"]["loss"], 5),
            "first_logged_loss": round(next(e["loss"] for e in log if "loss" in e), 5),
            "processes": json.loads((run / "provenance.json").read_text()).get("processes"),
            "train_seconds": metrics["train_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    python = sys.executable
    torchrun = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    accelerate = [python, "-m", "accelerate.commands.launch", "--num_processes", "2"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = str(setup(folder, args.steps))
        runs = {
            "one process, batch 16": ([python, "-m", "lmtune", "train", config, "output.name=one"], "one"),
            "torchrun 2 x batch 8": ([*torchrun, "-m", "lmtune", "train", config, "train.batch_size=8",
                                      "output.name=torchrun"], "torchrun"),
            "accelerate --multi_gpu 2 x batch 8": ([*accelerate, "--multi_gpu", "-m", "lmtune", "train", config,
                                                    "train.batch_size=8", "output.name=accelerate"], "accelerate"),
            "accelerate --cpu --num_processes 2": ([*accelerate, "--cpu", "-m", "lmtune", "train", config,
                                                    "output.name=accelerate_cpu"], "accelerate_cpu"),
        }
        report = {}
        for label, (command, name) in runs.items():
            report[label] = result(folder, name, *launch(command, folder / f"{name}.log"))
        # the finished torchrun run again, without output.overwrite: the main process refuses it
        code, seconds, after = launch([*torchrun, "-m", "lmtune", "train", config, "train.batch_size=8",
                                       "output.name=torchrun"], folder / "refused.log", watch="holds a finished run")
        text = (folder / "refused.log").read_text()
        report["refused (torchrun 2, finished run)"] = {
            "exit": code, "seconds": seconds, "seconds_from_the_refusal_to_the_exit": after,
            "ranks_that_said_so": text.count("holds a finished run")}
    print(json.dumps({"steps": args.steps, "threads_per_process": 1, **report}, indent=2))


if __name__ == "__main__":
    main()
