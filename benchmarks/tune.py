"""Issue 6's study: MiniLM + LoRA on 500 SST-2 sentences (872-sentence dev), learning rate and rank searched with
TPE and with differential evolution at the same trial budget, plus the base config (LoRA defaults) as reference.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tune.py [--trials 12] [--de-workers 2] [--out benchmarks/out/tune]

Each study resumes when run again (a killed or time-capped study runs only its missing trials). Prints the
markdown rows of benchmarks/RESULTS.md from the studies' summary.json files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(example: str, out: Path, *overrides: str) -> float:
    started = time.perf_counter()
    command = [sys.executable, "-m", "lmtune", "tune", f"examples/{example}", f"output.dir={out}", *overrides]
    subprocess.run(command, cwd=ROOT, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--de-workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "tune")
    args = parser.parse_args()
    budget = [f"budget.trials={args.trials}", "budget.time_seconds=3600"]
    walls = {"tpe": run("sst2_tune_tpe.yaml", args.out / "tpe", *budget),
             "de": run("sst2_tune_de.yaml", args.out / "de", *budget, "reference=false", f"workers={args.de_workers}")}
    print("| search | trials | best accuracy | best learning rate | best rank | trial seconds (sum) | wall s |")
    print("|---|---|---|---|---|---|---|")
    for name in ("tpe", "de"):
        summary = json.loads((args.out / name / "summary.json").read_text())
        best = summary["best"]
        print(f"| {name} | {summary['trials']['complete']} | {best['score']:.4f} | "
              f"{best['params']['train.learning_rate']:.2e} | {best['params']['method.rank']} | "
              f"{summary['trial_seconds_total']:.0f} | {walls[name]:.0f} |")
        if summary.get("reference"):
            print(f"| base config (LoRA defaults) | 1 | {summary['reference']['score']:.4f} | 1e-3 | 8 | | |")


if __name__ == "__main__":
    main()
