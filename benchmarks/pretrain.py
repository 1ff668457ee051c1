"""Issue 8's experiments: what pre-training is worth.

    python benchmarks/pretrain.py transfer      # MiniLM pretrained vs. random init on SST-2 100/500/2,000/10,000
    python benchmarks/pretrain.py scratch       # BPE tokenizer, Llama + LSTM pre-trained from scratch, then SST-2
    python benchmarks/pretrain.py continue      # SmolLM2 + LoRA on Gutenberg: held-out perplexity before/after
    python benchmarks/pretrain.py report        # the plot and the markdown tables from what finished

Each step is resumable: finished runs are read, not re-run. One torch thread everywhere (set OMP_NUM_THREADS=1);
logs go to stdout (run with nohup ... > benchmarks/out/pretrain/<name>.log). Results land in
benchmarks/out/pretrain/results.json; the plot in docs/examples/transfer_gain.svg.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "pretrain"
RESULTS = OUT / "results.json"
PLOT = ROOT / "docs" / "examples" / "transfer_gain.svg"
EXAMPLES = ROOT / "examples"
SST2_MAJORITY = 444 / 872  # dev: 444 positive, 428 negative


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def save(key: str, value) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[key] = value
    results["machine"] = machine()
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")


def compare(config: str, overrides: list[str] | None = None):
    import lmtune.models.lstm  # noqa: F401 - LSTM folders load with AutoModel in this process
    from lmtune.compare.runner import load_compare_config, run_compare

    started = time.perf_counter()
    result = run_compare(load_compare_config(EXAMPLES / config, overrides or []))
    return result, time.perf_counter() - started


def transfer(_args) -> None:
    result, seconds = compare("pretrain_transfer_gain.yaml")
    save("transfer_wall_seconds", round(seconds, 1))
    report(_args)


def _pretrain(config: str, command: str = "model") -> dict:
    from lmtune.pretrain.config import load_pretrain_config

    cfg = load_pretrain_config(command, EXAMPLES / config, [])
    metrics_file = Path(cfg.output.dir) / "metrics.json"
    if metrics_file.is_file():
        return json.loads(metrics_file.read_text())
    resume = ["train.resume=true"] if Path(cfg.output.dir).is_dir() else []
    cfg = load_pretrain_config(command, EXAMPLES / config, resume)
    started = time.perf_counter()
    if command == "model":
        from lmtune.pretrain.from_scratch import run_pretrain

        metrics = run_pretrain(cfg)
    else:
        from lmtune.pretrain.continue_ import run_continue

        metrics = run_continue(cfg)
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
    return metrics


def scratch(_args) -> None:
    from lmtune.pretrain.config import load_pretrain_config
    from lmtune.pretrain.tokenizer import run_tokenizer

    tok_cfg = load_pretrain_config("tokenizer", EXAMPLES / "pretrain_tokenizer.yaml", [])
    report_file = Path(tok_cfg.output.dir) / "tokenizer_report.json"
    save("tokenizer", json.loads(report_file.read_text()) if report_file.is_file() else run_tokenizer(tok_cfg))
    for name in ("llama", "lstm"):
        save(f"pretrain_{name}", _pretrain(f"pretrain_{name}.yaml"))
    result, seconds = compare("pretrain_scratch_finetune.yaml")
    save("scratch_finetune", {e["name"]: {"accuracy": e["metrics"].get("accuracy"), "train_seconds": e["train_seconds"],
                                          "status": e["status"], "error": e["error"]} for e in result.entries})
    save("scratch_finetune_wall_seconds", round(seconds, 1))


def continued(_args) -> None:
    save("continue_smollm2", _pretrain("pretrain_continue_smollm2.yaml", "continue"))


def report(_args) -> None:
    from lmtune.pretrain import transfer as tg

    folder = ROOT / "runs" / "transfer-gain"
    rows = tg.gaps(tg.collect(folder))
    if rows:
        tg.plot(rows, PLOT, "What pre-training is worth on SST-2 (MiniLM, full fine-tuning)", floor=SST2_MAJORITY)
        save("transfer_gain", rows)
        print(tg.markdown_table(rows))
        print(f"plot: {PLOT}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["transfer", "scratch", "continue", "report"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    {"transfer": transfer, "scratch": scratch, "continue": continued, "report": report}[args.step](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
