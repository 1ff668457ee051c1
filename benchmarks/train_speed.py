"""Training speed and memory: lmtune against PEFT + transformers Trainer written the way PEFT's examples write it,
in one process, interleaved (the machine is shared: every variant runs once per round, rounds rotate the order,
medians and the spread are reported).

    python benchmarks/train_speed.py --model minilm --rows 2000 --batch 32 --epochs 1      # SST-2, LoRA
    python benchmarks/train_speed.py --model smollm2 --rows 64 --batch 8 --steps 8          # math_data.json, LoRA
    python benchmarks/train_speed.py --model llama-1.2b --strategy lora --seq 1024 --batch 8 --steps 30 --json  # GPU
    python benchmarks/train_speed.py --model llama-tiny --strategy lora --seq 64 --batch 4 --steps 3 --json     # CPU check

Variants: `lmtune` (its defaults), `plain` (PEFT model + Trainer, `DataCollatorWithPadding` for classification,
`DataCollatorForSeq2Seq` for labelled LM rows, which `DataCollatorWithPadding` cannot pad; Trainer's defaults),
`grouped` (the same with `train_sampling_strategy="group_by_length"`), and on a GPU `compile` (with
`torch_compile=True`). Every variant trains the same encoded rows (lmtune's tokenisation) with the same learning
rate, schedule, batch size, steps and seed. Measured per run: real (non-padding) tokens per second over the steps
after the first (`tokens_per_s`; the first step, where compilation happens, is in `wall_tokens_per_s`), the median
step time, peak memory (GPU: max allocated; CPU: peak RSS above the RSS before training) and the training loss
(mean over the last quarter of the steps). `--model llama-1.2b` builds a 1.2B Llama shape with random weights
(hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate 8192, vocabulary 128,256) and rows of exactly `--seq`
tokens, all in the loss: the work of the issue's H100 measurement.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "data"
LLAMA_SHAPES = {
    "llama-1.2b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=8192, vocab_size=128256),
    "llama-tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=128, vocab_size=1024),
}
H100_BF16_TFLOPS = 989.0  # dense bf16 peak of an H100/H200 SXM, for the MFU of full fine-tuning


@dataclass
class Work:
    """What every variant trains: the lmtune config, the encoded rows and how the baseline builds its model."""

    raw: dict
    kind: str  # classification | causal
    model_path: Path
    random_init: bool
    train_rows: object = None
    tokenizer: object = None
    num_labels: int = 2
    lora_targets: list[str] | str | None = None
    held_out: object = None  # encoded validation rows every variant is scored on after training
    extra: dict = field(default_factory=dict)


# ---- measuring ---------------------------------------------------------------------------------------------------


class CountingCollator:
    """Records the real tokens (rows before padding) of every batch it builds, in order (the data loader may
    build one batch ahead of the step that uses it: step k has used the first k batches)."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __call__(self, features, *args, **kwargs):
        self.batches.append(sum(len(f["input_ids"]) for f in features))
        return self.inner(features, *args, **kwargs)


class StepClock(TrainerCallback):
    def __init__(self, counter: CountingCollator):
        self.counter, self.begin, self.ends, self.tokens, self.losses = counter, None, [], [], []

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if self.begin is None:
            self.begin = self._now()

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(self._now())
        self.tokens.append(sum(self.counter.batches[: len(self.ends) * args.gradient_accumulation_steps]))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def result(self) -> dict:
        steps = len(self.ends)
        times = [self.ends[0] - self.begin] + [b - a for a, b in zip(self.ends, self.ends[1:])]
        steady_s = self.ends[-1] - self.ends[0]
        tail = self.losses[-max(1, len(self.losses) // 4):]
        return {
            "steps": steps,
            "tokens": self.tokens[-1],
            "tokens_per_s": (self.tokens[-1] - self.tokens[0]) / steady_s if steps > 1 else None,
            "wall_tokens_per_s": self.tokens[-1] / (self.ends[-1] - self.begin),
            "step_s": statistics.median(times[1:] or times),
            "first_step_s": times[0],
            "final_loss": statistics.fmean(tail) if tail else None,
        }


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        try:  # hand freed heap back to the OS, so the next run's RSS peak is its own
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass


def held_out_loss(model, rows) -> float | None:
    """The mean loss over held-out rows, one row at a time (no padding, so every variant's model is scored on the
    very same inputs whatever its collator): the check that speed was not bought with a worse result."""
    if not rows:
        return None
    model.eval()
    device = next(model.parameters()).device
    losses = []
    with torch.no_grad():
        for row in rows:
            batch = {k: torch.tensor([row[k]], device=device) for k in ("input_ids", "attention_mask", "labels")}
            losses.append(float(model(**batch).loss))
    model.train()
    return statistics.fmean(losses)


def measured_train(trainer, held_out=None) -> dict:
    from lmtune.train.memory import PeakMemory

    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    clock = StepClock(counter)
    trainer.add_callback(clock)
    release_memory()
    if torch.cuda.is_available():
        trainer.train()
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        with PeakMemory(interval=0.02) as peak:
            before = peak.peak_bytes
            trainer.train()
        peak_mb = (peak.peak_bytes - before) / 2**20
    return {**clock.result(), "peak_mb": round(peak_mb, 1), "held_out_loss": held_out_loss(trainer.model, held_out)}


# ---- the variants ------------------------------------------------------------------------------------------------


def precision_override() -> dict:
    """bf16 autocast on GPUs (what `train.precision=auto` picks there too, said explicitly for the comparison)."""
    return {"precision": "bf16"} if torch.cuda.is_available() else {}


def lmtune_run(work: Work, out: Path, options: dict) -> dict:
    import transformers

    from lmtune.methods import STRATEGIES
    from lmtune.models.loading import load_backbone
    from lmtune.runconfig import build_task, resolve, resolve_config
    from lmtune.train.runner import _trainer

    raw = json.loads(json.dumps(work.raw))
    raw["train"].update(options)
    cfg = resolve(resolve_config(raw))
    task = build_task(cfg)
    transformers.set_seed(cfg.train.seed)  # as lmtune train does: the new head's weights come from the seed
    splits = task.load_data()
    backbone = load_backbone(cfg.model, task.backbone_class, cfg.train.seed)
    model = STRATEGIES.build(cfg.method.name, cfg.method).apply(task.build_model(backbone))
    trainer = _trainer(cfg, out, task, model, splits, None)
    return measured_train(trainer, work.held_out)


def lmtune_options(variant: str) -> dict:
    """`lmtune` is lmtune's defaults; `lmtune:fast_dropout=false:length_pool=1` switches train options off, one at a
    time, to measure what each is worth (values are read as YAML)."""
    import yaml

    pairs = [item.split("=", 1) for item in variant.split(":")[1:]]
    return {key: yaml.safe_load(value) for key, value in pairs}


def baseline_run(work: Work, out: Path, variant: str) -> dict:
    """PEFT + Trainer as PEFT's examples write it."""
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        DataCollatorForSeq2Seq,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    t = work.raw["train"]
    transformers.set_seed(t["seed"])
    tokenizer = work.tokenizer
    if work.kind == "classification":
        model = AutoModelForSequenceClassification.from_pretrained(work.model_path, num_labels=work.num_labels)
        collator, task_type = DataCollatorWithPadding(tokenizer), "SEQ_CLS"
    else:
        config = AutoConfig.from_pretrained(work.model_path)
        model = (AutoModelForCausalLM.from_config(config) if work.random_init
                 else AutoModelForCausalLM.from_pretrained(work.model_path))
        collator, task_type = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True), "CAUSAL_LM"
    method = work.raw["method"]
    if method["name"] == "lora":
        model = get_peft_model(model, LoraConfig(task_type=task_type, r=method.get("rank", 8),
                                                 lora_alpha=method.get("alpha", 16.0),
                                                 lora_dropout=method.get("dropout", 0.1),
                                                 target_modules=work.lora_targets))
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=t["batch_size"], learning_rate=work.extra["learning_rate"],
        num_train_epochs=t.get("epochs", 1), max_steps=t.get("max_steps") or -1, warmup_steps=0.06,
        seed=t["seed"], save_strategy="no", logging_steps=1, report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, bf16=torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if variant == "grouped" else "random",
        torch_compile=variant == "compile",
    )
    trainer = Trainer(model=model, args=args, train_dataset=work.train_rows, data_collator=collator,
                      processing_class=tokenizer)
    return measured_train(trainer, work.held_out)


# ---- the work ----------------------------------------------------------------------------------------------------


def llama_folder(shape: str, seq: int, rows: int, folder: Path) -> tuple[Path, Path]:
    """A random-weights Llama of `shape` (config, word-level tokenizer, a placeholder weights file: lmtune's
    model.init=random never reads it) and instruction rows longer than `seq` tokens (cut to exactly `seq`)."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from lmtune.models.tiny import build_tokenizer

    words = [f"w{i}" for i in range(900)]
    tokenizer = build_tokenizer([" ".join(words)], "llama", vocab_size=1000)
    sizes = LLAMA_SHAPES[shape]
    config = LlamaConfig(**sizes, max_position_embeddings=max(2048, 2 * seq), pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, tie_word_embeddings=True,
                         architectures=["LlamaForCausalLM"])
    model_dir = folder / shape
    model_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    save_file({"placeholder": torch.zeros(1)}, str(model_dir / "model.safetensors"))
    rng = random.Random(0)
    data = folder / "rows.jsonl"
    with data.open("w") as handle:
        for _ in range(rows):
            text = " ".join(rng.choices(words, k=seq))
            handle.write(json.dumps({"instruction": text, "input": "", "output": text[: len(text) // 4]}) + "\n")
    return model_dir, data


def build_work(args, folder: Path) -> Work:
    from lmtune.models.loading import load_tokenizer, resolve_model_path
    from lmtune.models.targets import default_lora_targets
    from lmtune.runconfig import build_task, resolve, resolve_config

    steps = {"max_steps": args.steps} if args.steps else {"epochs": args.epochs}
    train = {"batch_size": args.batch, "seed": args.seed, "num_threads": args.threads, "progress": False,
             "eval_every": "no", "logging_steps": 1, **steps, **precision_override()}
    method = {"name": args.strategy}
    if args.model == "minilm":
        raw = {"model": {"name": "minilm", **({"max_length": args.seq} if args.seq else {})},
               "data": {"train": str(DATA / "glue_sst2" / "train.tsv"), "validation": str(DATA / "glue_sst2" / "dev.tsv"),
                        "text_column": "sentence", "max_train_samples": args.rows, "max_eval_samples": 200},
               "task": {"name": "classification"}}
        kind, random_init = "classification", False
    elif args.model in LLAMA_SHAPES:
        seq = args.seq or 1024
        model_dir, data = llama_folder(args.model, seq, args.rows or args.batch * (args.steps or 4) + 8, folder)
        raw = {"model": {"name": str(model_dir), "max_length": seq, "init": "random"},
               "data": {"train": str(data), "validation_fraction": 0.05, "max_eval_samples": 4},
               "task": {"name": "instruction", "template": "alpaca", "train_on_inputs": True}}
        kind, random_init = "causal", True
    else:
        raw = {"model": {"name": args.model, **({"max_length": args.seq} if args.seq else {})},
               "data": {"train": str(DATA / "llm_adapters" / "ft-training_set" / "math_data.json"),
                        "max_train_samples": args.rows, "max_eval_samples": 32},
               "task": {"name": "instruction"}}
        kind, random_init = "causal", False
    raw.update(method=method, train=train, output={"dir": str(folder / "runs")})
    cfg = resolve(resolve_config(json.loads(json.dumps(raw))))
    task = build_task(cfg)
    model_path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(model_path)
    splits = task.load_data()
    rows = task.encode(splits.train, tokenizer)
    held_out = task.encode(splits.validation, tokenizer) if splits.validation is not None else None
    model_type = json.loads((model_path / "config.json").read_text())["model_type"]
    return Work(raw, kind, model_path, random_init, rows, tokenizer, len(cfg.data.labels or []) or 2,
                default_lora_targets(model_type), held_out, {"learning_rate": cfg.train.learning_rate})


# ---- the report --------------------------------------------------------------------------------------------------


def summarise(runs: dict[str, list[dict]]) -> dict:
    summary = {}
    for name, results in runs.items():
        entry: dict = {}
        for key in ("tokens_per_s", "wall_tokens_per_s", "step_s", "first_step_s", "peak_mb", "final_loss",
                    "held_out_loss"):
            values = [r[key] for r in results if r.get(key) is not None]
            if values:
                entry[key] = statistics.median(values)
                entry[key + "_spread"] = [min(values), max(values)]
        entry["tokens"] = results[0]["tokens"]
        entry["steps"] = results[0]["steps"]
        summary[name] = entry
    lm = summary.get("lmtune")
    if lm:
        for name, results in runs.items():
            entry = summary[name]
            if name != "lmtune" and entry.get("tokens_per_s") and lm.get("tokens_per_s"):
                lm[f"speed_vs_{name}"] = round(lm["tokens_per_s"] / entry["tokens_per_s"], 3)
                lm[f"memory_vs_{name}"] = round(lm["peak_mb"] / entry["peak_mb"], 3) if entry["peak_mb"] > 0 else None
                # the same round ran both within minutes: its ratio is less exposed to the machine's load swings
                lm[f"speed_vs_{name}_per_round"] = [round(a["tokens_per_s"] / b["tokens_per_s"], 3)
                                                    for a, b in zip(runs["lmtune"], results) if a["tokens_per_s"]]
    return summary


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, no GPU, torch {torch.__version__}"


def mfu(entry: dict, parameters: int) -> float | None:
    if not torch.cuda.is_available() or not entry.get("tokens_per_s"):
        return None
    return round(6 * parameters * entry["tokens_per_s"] / 1e12 / H100_BF16_TFLOPS, 4)


def print_table(report: dict) -> None:
    print(f"\n{report['machine']}; threads {report['threads']}; load {report['load_before']} -> {report['load_after']}")
    print(f"command: {report['command']}\n")
    print("| variant | real tokens/s (median, spread) | step s | peak MB | final loss | held-out loss | lmtune / this (speed, memory) |")
    print("|---|---|---|---|---|---|---|")
    lm = report["variants"].get("lmtune", {})
    for name, e in report["variants"].items():
        spread = "–".join(f"{v:.0f}" for v in e.get("tokens_per_s_spread", []))
        ratio = f"{lm.get(f'speed_vs_{name}', '')}×, {lm.get(f'memory_vs_{name}', '')}×" if name != "lmtune" else ""
        print(f"| {name} | {e.get('tokens_per_s', 0):.0f} ({spread}) | {e.get('step_s', 0):.3f} | "
              f"{e.get('peak_mb', 0):.0f} | {e.get('final_loss', float('nan')):.4f} | "
              f"{e.get('held_out_loss') or float('nan'):.4f} | {ratio} |")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="minilm, smollm2, llama-1.2b, llama-tiny or a model folder")
    parser.add_argument("--strategy", default="lora", choices=["lora", "full"])
    parser.add_argument("--rows", type=int, default=None, help="training rows (SST-2 default 2000, math 64)")
    parser.add_argument("--seq", type=int, default=None, help="model.max_length (task default when not given)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: --epochs)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; every variant runs once per round")
    parser.add_argument("--variants", default=None, help="comma list of lmtune,plain,grouped,compile; lmtune:key=value:... runs lmtune with train options changed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", action="store_true", help="print one JSON object and nothing else on stdout")
    args = parser.parse_args(argv)
    if args.rows is None:
        args.rows = {"minilm": 2000}.get(args.model, None if args.model in LLAMA_SHAPES else 64)
    args.threads = args.threads or os.cpu_count()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    variants = (args.variants.split(",") if args.variants
                else ["lmtune", "plain", "grouped"] + (["compile"] if torch.cuda.is_available() else []))
    stdout = sys.stdout
    if args.json:
        sys.stdout = sys.stderr  # Trainer and lmtune print; stdout carries the JSON alone
    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        work = build_work(args, folder)
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for round_ in range(args.repeats):
            for i in range(len(variants)):
                name = variants[(i + round_) % len(variants)]
                out = folder / f"{name}-{round_}"
                result = (lmtune_run(work, out, lmtune_options(name)) if name.startswith("lmtune")
                          else baseline_run(work, out, name))
                print(f"round {round_} {name}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})}",
                      file=sys.stderr, flush=True)
                runs[name].append(result)
                release_memory()
        parameters = sum(p.numel() for p in _count_model(work).parameters())
    report = {
        "machine": machine(), "threads": args.threads, "load_before": load_before,
        "load_after": [round(v, 2) for v in os.getloadavg()], "command": "python benchmarks/train_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k != "json"}, "rows": len(work.train_rows),
        "variants": summarise(runs), "runs": runs,
    }
    report["parameters"] = parameters
    if args.strategy == "full":  # 6 N FLOPs per token: forward and both backward matmuls of every weight
        for entry in report["variants"].values():
            entry["mfu"] = mfu(entry, parameters)
    sys.stdout = stdout
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return report


def _count_model(work: Work):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if work.kind == "classification" else AutoModelForCausalLM
    with torch.device("meta"):
        return auto.from_config(AutoConfig.from_pretrained(work.model_path))


if __name__ == "__main__":
    main()
