"""Serving throughput: one base model, a stream of requests for 0, 1, 8 or 32 distinct adapters, lmtune's engine
against PEFT's `adapter_names` on the same model in the same run.

    python benchmarks/serve.py [--model smollm2 | --model llama-1b] [--requests 48] [--max-tokens 32]
                               [--batch 16] [--threads 2] [--repeats 2] [--out benchmarks/out/serve]

lmtune serves mixed kinds (LoRA, bottleneck, prompt tuning, p-tuning, prefix tuning cycled over the adapters);
PEFT can only route LoRA adapters per row, so its rows use LoRA adapters of the same count, and lmtune serves that
LoRA-only stream too (the cost of per-row routing, apart from what the kinds themselves add: a 20-token soft prompt
makes its rows longer). Every request asks for
exactly `--max-tokens` new tokens (ignore_eos / min_new_tokens), so both sides generate the same number of tokens.
Adapters are random (timing only) and written in PEFT's format with PEFT itself. `--model llama-1b` is the
1.2B Llama shape of issue 7 with random weights (SmolLM2's tokenizer), for a GPU machine. Writes
`<out>/results.json` and a markdown table for benchmarks/RESULTS.md; reports the median over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KINDS = ("lora", "bottleneck", "prompt", "p_tuning", "prefix")
LONG_JSON = {"type": "object", "properties": {"story": {"type": "string", "minLength": 2000}}, "required": ["story"]}


def base_folder(name: str, out: Path) -> Path:
    from lmtune.config.schema import ModelConfig
    from lmtune.models.loading import resolve_model_path

    smol = resolve_model_path(ModelConfig(name="smollm2"))
    if name == "smollm2":
        return smol
    folder = out / "llama-1b-random"
    if not (folder / "config.json").is_file():
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(smol)
        config.update({"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                       "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "tie_word_embeddings": True})
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        for tokenizer_file in smol.glob("tokenizer*"):
            shutil.copy(tokenizer_file, folder)
        for extra in ("special_tokens_map.json", "generation_config.json", "chat_template.jinja"):
            if (smol / extra).is_file():
                shutil.copy(smol / extra, folder)
    return folder


def peft_config(kind: str):
    from peft import LoraConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig

    from lmtune.methods.bottleneck_peft import BottleneckConfig

    return {
        "lora": LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                           init_lora_weights=False),
        "bottleneck": BottleneckConfig(task_type="CAUSAL_LM", bottleneck_size=64, placement="mlp",
                                       target_modules=r"(.*\.)?(mlp\.down_proj)"),
        "prompt": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20),
        "p_tuning": PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=20, encoder_hidden_size=128),
        "prefix": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=10),
    }[kind]


def make_adapters(base: Path, root: Path, count: int) -> dict[str, list[str]]:
    """`count` adapters of mixed kinds and `count` LoRA adapters (for PEFT), written once."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    names = {"mixed": [f"{KINDS[i % len(KINDS)]}-{i}" for i in range(count)], "lora": [f"lora-{i}" for i in range(count)]}
    model = None
    for name in dict.fromkeys(names["mixed"] + names["lora"]):
        if (root / name / "adapter_config.json").is_file():
            continue
        model = model or AutoModelForCausalLM.from_pretrained(base)
        torch.manual_seed(hash(name) % 2**31)
        wrapped = get_peft_model(model, peft_config(name.rsplit("-", 1)[0]))
        for param_name, param in wrapped.named_parameters():
            if param.requires_grad and ("bottleneck_up" in param_name or "embedding" in param_name):
                torch.nn.init.normal_(param, std=0.02)  # random, nonzero: the adapter must change something
        wrapped.save_pretrained(root / name)
        model = wrapped.unload() if not wrapped.peft_config["default"].is_prompt_learning else wrapped.get_base_model()
    return names


def prompts(count: int, tokenizer, length: int) -> list[list[int]]:
    text = (SHARED / "tiny_shakespeare" / "input.txt").read_text()
    ids = tokenizer(text[: 200 * length * count])["input_ids"]
    return [ids[i * 3 * length : i * 3 * length + length - (i % 5) * 4] for i in range(count)]


def run_engine(engine, requests: list[list[int]], adapters: list[str | None], max_tokens: int,
               asking: float = 0.0, field: str = "logprobs") -> float:
    """Generated tokens/s; `asking`: the share of requests (spread evenly) that ask for `field`: logprobs (top 5 per
    token) or JSON output (LONG_JSON: an object whose one string is too long to end within max_tokens, so JSON rows
    generate as many tokens as the others; tokens are counted all the same)."""
    from lmtune.serve.engine import SamplingParams

    plain = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    special = (SamplingParams(max_tokens=max_tokens, ignore_eos=True, logprobs=5) if field == "logprobs" else
               SamplingParams(max_tokens=max_tokens, response_format=("json_schema", LONG_JSON)))
    remaining = threading.Semaphore(0)
    tokens = []

    def on_event(event):
        if event.finished:
            tokens.append(event.completion_tokens)
            remaining.release()

    started = time.perf_counter()
    for i, (prompt, adapter) in enumerate(zip(requests, adapters)):
        params = special if int((i + 1) * asking) > int(i * asking) else plain
        engine.submit_generation(prompt, adapter, params, on_event)
    for _ in requests:
        remaining.acquire()
    return sum(tokens) / (time.perf_counter() - started)


def run_peft(model, tokenizer, requests, adapters, max_tokens: int, batch: int) -> float:
    tokenizer.padding_side = "left"
    started = time.perf_counter()
    for start in range(0, len(requests), batch):
        rows = requests[start : start + batch]
        padded = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
        options = {"adapter_names": adapters[start : start + batch]} if adapters else {}
        with torch.inference_mode():
            model.generate(**padded, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id, **options)
    return len(requests) * max_tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", choices=["smollm2", "llama-1b"])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--prompt-tokens", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/out/serve")
    parser.add_argument("--fields-overhead", action="store_true",
                        help="only measure tokens/s with 0, 25%% and 100%% of the rows asking for logprobs (top 5) "
                             "and for JSON output, on the 8-adapter mixed-kind stream")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out)
    base = base_folder(args.model, out)
    root = out / f"adapters-{args.model}"
    names = make_adapters(base, root, 32)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lmtune.serve.engine import Engine, EngineConfig

    engine = Engine(str(base), root, EngineConfig(max_batch_size=args.batch, memory_budget_mb=4096))
    engine.start()
    requests = prompts(args.requests, engine.tokenizer, args.prompt_tokens)
    if args.fields_overhead:
        return fields_overhead(engine, requests, names["mixed"], args)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base).eval(), root / names["lora"][0],
                                           adapter_name=names["lora"][0])
    for name in names["lora"][1:]:
        peft_model.load_adapter(root / name, adapter_name=name)
    scenarios = {"base only": 0, "1 adapter": 1, "8 adapters": 8, "32 adapters": 32}
    streams = {}
    for label, count in scenarios.items():
        mixed = [names["mixed"][i % count] if count else None for i in range(args.requests)]
        streams[label] = ([names["lora"][0]] * args.requests if count == 1 else mixed,
                          [names["lora"][i % count] for i in range(args.requests)] if count else None)
        run_engine(engine, requests[: args.batch], streams[label][0][: args.batch], 4)  # warm-up, first loads
    # Repeats interleave the two servers and every scenario, so a busy moment of the machine hits all alike.
    speeds: dict[str, dict[str, list[float]]] = {label: {"lmtune": [], "lmtune_lora": [], "peft": []} for label in scenarios}
    for _ in range(args.repeats):
        for label, (mixed, loras) in streams.items():
            speeds[label]["lmtune"].append(run_engine(engine, requests, mixed, args.max_tokens))
            # The same LoRA-only stream PEFT gets: the cost of routing rows, kinds aside.
            speeds[label]["lmtune_lora"].append(run_engine(engine, requests, loras or mixed, args.max_tokens))
            if loras is None:
                with peft_model.disable_adapter():
                    speeds[label]["peft"].append(run_peft(peft_model, engine.tokenizer, requests, None, args.max_tokens, args.batch))
            else:
                speeds[label]["peft"].append(run_peft(peft_model, engine.tokenizer, requests, loras, args.max_tokens, args.batch))
            print(f"{label:<12} " + "   ".join(f"{side} {v[-1]:7.1f}" for side, v in speeds[label].items()) + " tok/s", flush=True)
    engine.shutdown()
    results = {label: {side: statistics.median(v) for side, v in row.items()} for label, row in speeds.items()}

    machine = (torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores") + \
        f", {args.threads} torch threads, torch {torch.__version__}, {platform.python_version()}"
    record = {"model": args.model, "machine": machine, "requests": args.requests, "max_tokens": args.max_tokens,
              "batch": args.batch, "results": results, "runs": speeds}
    (out / f"results-{args.model}.json").write_text(json.dumps(record, indent=2))
    base_speed = results["base only"]["lmtune"]
    print(f"\n{args.model}, {machine}; {args.requests} requests × {args.max_tokens} new tokens, batch {args.batch}\n")
    print("| distinct adapters in the stream | lmtune, mixed kinds: tok/s (vs base) | lmtune, LoRA only | "
          "PEFT `adapter_names`, LoRA only | lmtune / PEFT (LoRA only) |")
    print("|---|---|---|---|---|")
    for label, row in results.items():
        print(f"| {label} | {row['lmtune']:.1f} ({row['lmtune'] / base_speed:.0%}) | {row['lmtune_lora']:.1f} "
              f"({row['lmtune_lora'] / base_speed:.0%}) | {row['peft']:.1f} ({row['peft'] / results['base only']['peft']:.0%}) "
              f"| {row['lmtune_lora'] / row['peft']:.2f}× |")


def fields_overhead(engine, requests, names: list[str], args) -> None:
    """tokens/s of the 8-adapter mixed stream with 0, 25% and 100% of its rows asking for logprobs (top 5), and for
    JSON output (json_object), all scenarios interleaved in each repeat."""
    mixed = [names[i % 8] for i in range(len(requests))]
    scenarios = {("none", "0%"): ("logprobs", 0.0)}
    for field in ("logprobs", "json"):
        for label, share in (("25%", 0.25), ("100%", 1.0)):
            scenarios[(field, label)] = (field, share)
    run_engine(engine, requests[: args.batch], mixed[: args.batch], 4, 1.0, "json")  # warm-up: loads, compiles
    speeds: dict[tuple, list[float]] = {key: [] for key in scenarios}
    for _ in range(args.repeats):  # interleaved, so a busy moment of the machine hits every scenario alike
        for key, (field, share) in scenarios.items():
            speeds[key].append(run_engine(engine, requests, mixed, args.max_tokens, share, field))
            print(f"{key[0]:>8} asked by {key[1]:>4} of rows: {speeds[key][-1]:7.1f} tok/s", flush=True)
    engine.shutdown()
    medians = {key: statistics.median(v) for key, v in speeds.items()}
    record = {" ".join(key): {"runs": speeds[key], "median": medians[key]} for key in scenarios}
    Path(args.out, f"fields-{args.model}.json").write_text(json.dumps(record, indent=2))
    base = medians[("none", "0%")]
    print("\n| rows asking | for | tokens/s (median) | vs none |\n|---|---|---|---|")
    for (field, label), speed in medians.items():
        print(f"| {label} | {field} | {speed:.1f} | {speed / base:.0%} |")


if __name__ == "__main__":
    sys.exit(main())
