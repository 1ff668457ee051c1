"""lm-evaluation-harness itself against `lmtune serve`: `--model local-completions` (echo + logprobs over token-id
prompts) on ARC-Easy from ../shared/data through a local task YAML (no hub), compared with `lmtune eval`'s own
multiple-choice scoring of the same questions with the same model.

    python benchmarks/lm_eval_serve.py [--limit 100] [--threads 1] [--out benchmarks/out/lm_eval]

Both sides read the same questions: the first `--limit` rows of `llm_adapters/dataset/ARC-Easy/test.json`, parsed
by lmtune's `llm_adapters` layout (question, options, gold) and written to a JSONL file the YAML reads. The
harness's prompt is lmtune's default (`Question: {question}\\nAnswer:`, each choice after a space), so the two
accuracies should agree; per-question picks are compared too. Needs `pip install -e ".[harness]"` (lm-eval 0.4.13).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ARC = SHARED / "llm_adapters" / "dataset" / "ARC-Easy" / "test.json"
YAML = """task: arc_easy_lmtune
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def write_task(out: Path, limit: int) -> Path:
    from lmtune.data.choices import choice_items

    rows = json.loads(ARC.read_text())[:limit]
    items = choice_items(rows, "llm_adapters")
    data = out / "arc_easy.jsonl"
    data.write_text("".join(json.dumps({"question": i.question, "choices": i.choices, "gold": i.gold}) + "\n"
                            for i in items))
    (out / "tasks").mkdir(exist_ok=True)
    (out / "tasks" / "arc_easy_lmtune.yaml").write_text(YAML.format(data=data.resolve()))
    return out / "tasks"


def serve(port: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    process = subprocess.Popen([sys.executable, "-m", "lmtune.cli", "serve", "--base", "smollm2", "--port", str(port),
                                "--threads", str(threads), "--log-level", "warning"], env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(1)
    process.kill()
    raise RuntimeError("lmtune serve did not start")


def harness(port: int, tasks: Path, limit: int, out: Path) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from lmtune.config.schema import ModelConfig
    from lmtune.models.loading import resolve_model_path

    tokenizer = resolve_model_path(ModelConfig(name="smollm2"))
    args = (f"model=smollm2,base_url=http://127.0.0.1:{port}/v1/completions,tokenizer={tokenizer},"
            "tokenizer_backend=huggingface,tokenized_requests=True,num_concurrent=1,max_retries=1")
    started = time.perf_counter()
    result = lm_eval.simple_evaluate(model="local-completions", model_args=args, tasks=["arc_easy_lmtune"],
                                     task_manager=TaskManager(include_path=str(tasks)), limit=limit, log_samples=True)
    seconds = time.perf_counter() - started
    scores = result["results"]["arc_easy_lmtune"]
    samples = sorted(result["samples"]["arc_easy_lmtune"], key=lambda s: s["doc_id"])
    scores_per_choice = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    picks = [max(range(len(row)), key=row.__getitem__) for row in scores_per_choice]
    return {"acc": scores["acc,none"], "acc_norm": scores["acc_norm,none"], "seconds": seconds, "picks": picks,
            "loglikelihood": scores_per_choice}


def lmtune_eval(limit: int, out: Path, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": str(threads)}
    target = out / "lmtune-eval"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lmtune.cli", "eval", "--base", "smollm2", "--task", "llm_adapters",
                    "--datasets", "ARC-Easy", "--max-samples", str(limit), "--output", str(target)], env=env,
                   check=True)
    seconds = time.perf_counter() - started
    summary = json.loads((target / "predictions" / "llm_adapters.json").read_text())["sets"]["ARC-Easy"]
    rows = [json.loads(line) for line in (target / summary["predictions_file"]).read_text().splitlines()]
    return {"acc": summary["accuracy"], "acc_norm": summary["accuracy_norm"], "seconds": seconds,
            "picks": [r["prediction"] for r in rows], "loglikelihood": [r["loglikelihood"] for r in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/out/lm_eval")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = write_task(out, args.limit)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = serve(port, args.threads)
    try:
        theirs = harness(port, tasks, args.limit, out)
    finally:
        server.terminate()
        server.wait(30)
    ours = lmtune_eval(args.limit, out, args.threads)
    same = sum(a == b for a, b in zip(theirs["picks"], ours["picks"]))
    gap = max(abs(a - b) for x, y in zip(theirs["loglikelihood"], ours["loglikelihood"]) for a, b in zip(x, y))
    record = {"limit": args.limit, "harness": theirs, "lmtune_eval": ours, "same_picks": same, "max_ll_gap": gap}
    (out / "results.json").write_text(json.dumps(record, indent=2))
    print(f"\n| ARC-Easy, first {args.limit} test questions, untuned SmolLM2 | acc | acc_norm | seconds |\n|---|---|---|---|")
    print(f"| lm-evaluation-harness 0.4.13, local-completions → lmtune serve | {theirs['acc']:.3f} | "
          f"{theirs['acc_norm']:.3f} | {theirs['seconds']:.0f} |")
    print(f"| lmtune eval (multiple choice by log-likelihood) | {ours['acc']:.3f} | {ours['acc_norm']:.3f} | "
          f"{ours['seconds']:.0f} |")
    print(f"\nthe same pick (acc) on {same} of {len(ours['picks'])} questions; largest gap between the two "
          f"log-likelihoods of a choice: {gap:.2e} (lmtune eval rounds to 1e-4)")


if __name__ == "__main__":
    main()
