"""The GPU path end to end, in one script of at most 8 minutes on one H100/H200 (issue 15). Prints one JSON object.

    python benchmarks/gpu_check.py                        # on the GPU machine: pip install -e '.[gpu,serve]' first
    python benchmarks/gpu_check.py --device cpu --quick   # the same sections on tiny shapes, few steps (a CPU)

Sections (each one wrapped: a failure is recorded with its traceback and the others still run; a global time
budget skips what no longer fits):

1. `tests`: `LMTUNE_TEST_DEVICE=<device> pytest` on the device-sensitive tests (the strategy contract matrix's
   Llama row, serving parity, generation), in a subprocess running beside sections 2–3 (it needs little of the GPU;
   it is waited for before the timings of 4–5 start).
2. `strategies`: every registered strategy `train` (a few dozen steps, bf16 base) → `eval` → `predict` → served by
   a real `lmtune serve --device --dtype` process, one request each over HTTP; on the bundled SmolLM2 and on a 1.2B
   Llama shape with random weights (hidden 2048, 16 layers, 32 heads, 8 kv heads, intermediate 8192, SmolLM2's
   tokenizer and vocabulary). Full fine-tuning is served as its own base.
3. `qlora`: 4-bit LoRA on the 1.2B shape (train → eval, peak memory); on a CPU, the refusal naming CUDA and
   bitsandbytes is the expected result.
4. `train_speed`: tokens/s and peak memory of LoRA and full fine-tuning on the 1.2B shape (seq 1024, batch 8):
   lmtune through `benchmarks/train_speed.py --json` (a subprocess; its absence is recorded) beside plain
   PEFT + Trainer measured here, in the same run.
5. `serve_speed`: generation tokens/s at batch 32: the base alone, 8 adapters of mixed kinds and 8 LoRAs through
   lmtune's engine, and PEFT's `adapter_names` with the same 8 LoRAs (benchmarks/serve.py's adapters, prompts and
   request loop).

The JSON goes to stdout (everything else to stderr) and to `<out>/gpu_check.json`. Reference figures on an H100
from plain HF + PEFT (issue 15): full FT 41.2k tokens/s, LoRA r16 40.6k at 28.5 GiB; HF generate at batch 32: base
957 tokens/s, 8 LoRAs through `adapter_names` 119 tokens/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "benchmarks"))

LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
            "num_key_value_heads": 8, "head_dim": 64, "tie_word_embeddings": True}
TINY_LLAMA = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 16, "tie_word_embeddings": True}
STRATEGY_OPTIONS = {  # options where a strategy's defaults do not fit a generative run or a short one
    "freeze": {"train_last_layers": 1},
    "lora": {"rank": 16},
    "prompt_tuning": {"num_virtual_tokens": 8},
    "p_tuning": {"num_virtual_tokens": 8},
    "prefix_tuning": {"num_virtual_tokens": 8},
    "peft": {"peft_type": "IA3"},
}
RESERVE_S = 220
"""Seconds section 2 leaves for sections 3–5 (measured shares on an H200 are not known yet: a first guess)."""
DEVICE_TESTS = ["tests/test_strategy_contract.py", "tests/test_serve_engine.py", "tests/test_generative.py",
                "tests/test_device.py"]


@dataclass
class Plan:
    device: str
    quick: bool
    budget_s: float
    out: Path
    steps: int = 24
    batch: int = 8
    max_length: int = 256
    eval_rows: int = 8
    new_tokens: int = 16
    speed_seq: int = 1024
    speed_batch: int = 8
    speed_steps: int = 10
    serve_requests: int = 32
    serve_batch: int = 32
    serve_tokens: int = 32
    tests_select: str = "llama or test_serve_engine or generation or slow_reference or test_device"
    tests_timeout_s: float = 200
    threads: int | None = None
    dtype: str = "bfloat16"
    """The bases' dtype in sections 2, 3 and 5 (quick: auto, i.e. float32 on a CPU, where bf16 matmuls are slow;
    tests/test_device.py covers a bf16 base on the CPU)."""
    models: dict = field(default_factory=dict)

    @classmethod
    def make(cls, args) -> Plan:
        plan = cls(args.device, args.quick, args.budget, Path(args.out))
        if args.quick:  # the same code paths on shapes a 2-core CPU runs in minutes
            plan.steps, plan.batch, plan.max_length, plan.eval_rows, plan.new_tokens = 2, 2, 160, 2, 4
            plan.speed_seq, plan.speed_batch, plan.speed_steps = 64, 2, 3
            plan.serve_requests, plan.serve_batch, plan.serve_tokens = 8, 8, 4
            plan.tests_select, plan.tests_timeout_s, plan.threads = "lora and llama and not resume", 240, 1
            plan.dtype = "auto"
        plan.models = {"smollm2": None, "llama-1.2b": TINY_LLAMA if args.quick else LLAMA_1B}
        return plan


class Budget:
    def __init__(self, seconds: float):
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def run_section(results: dict, name: str, budget: Budget, needs_s: float, fn, *args) -> None:
    """`fn(*args)` → results[name] with its time (the section says `ok: false` itself where a part failed); an
    exception is recorded and the next section runs."""
    if budget.left() < needs_s:
        results[name] = {"ok": False, "skipped": f"time budget: {budget.left():.0f} s left, needs ~{needs_s:.0f} s"}
        return
    started = time.perf_counter()
    try:
        results[name] = {"ok": True, **fn(*args)}
    except Exception as err:  # noqa: BLE001 - one failed section must not hide the others
        results[name] = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
    results[name]["seconds"] = round(time.perf_counter() - started, 1)
    print(f"[gpu_check] {name}: {'ok' if results[name]['ok'] else 'FAILED'} in {results[name]['seconds']} s "
          f"({budget.left():.0f} s of budget left)", file=sys.stderr, flush=True)


# ---- models and data ------------------------------------------------------------------------------------------

def model_folder(plan: Plan, label: str) -> Path:
    """The bundled SmolLM2, or a random Llama of `plan.models[label]`'s shape with SmolLM2's tokenizer (bf16 on
    disk, built on the device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmtune.config.schema import ModelConfig
    from lmtune.models.loading import resolve_model_path

    smol = resolve_model_path(ModelConfig(name="smollm2"))
    shape = plan.models[label]
    if shape is None:
        return smol
    folder = plan.out / f"{label}-{shape['hidden_size']}x{shape['num_hidden_layers']}-random"
    if not (folder / "config.json").is_file():
        config = AutoConfig.from_pretrained(smol)
        config.update(shape)
        torch.manual_seed(0)
        with torch.device(plan.device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(folder)
        for extra in [*smol.glob("tokenizer*"), *(smol / n for n in ("special_tokens_map.json", "generation_config.json",
                                                                       "chat_template.jinja"))]:
            if extra.is_file():
                shutil.copy(extra, folder)
        del model
    return folder


def gsm8k_slices(plan: Plan) -> dict[str, str]:
    rows = (SHARED / "gsm8k" / "train.jsonl").read_text().splitlines()
    folder = plan.out / "data"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": plan.steps * plan.batch, "validation": plan.eval_rows, "test": plan.eval_rows}
    paths, start = {}, 0
    for split, size in sizes.items():
        (folder / f"{split}.jsonl").write_text("\n".join(rows[start : start + size]) + "\n")
        paths[split], start = str(folder / f"{split}.jsonl"), start + size
    return paths


def run_config(plan: Plan, model: Path, data: dict, out: Path, name: str, method: dict, **model_extra) -> dict:
    return {
        "model": {"name": str(model), "max_length": plan.max_length, "dtype": plan.dtype, **model_extra},
        "task": {"name": "instruction", "generation": {"max_new_tokens": plan.new_tokens, "batch_size": 8}},
        "data": data,
        "method": method,
        "train": {"max_steps": plan.steps, "batch_size": plan.batch, "eval_every": "no", "logging_steps": 5,
                  "progress": False, "num_threads": plan.threads, "warmup_ratio": 0.0},
        "eval": {"batch_size": 8},
        "output": {"dir": str(out), "name": name, "overwrite": True},
    }


def device_memory(plan: Plan, reset: bool = False) -> float | None:
    import torch

    from lmtune.device import peak_memory_mb, reset_peak_memory

    device = torch.device(plan.device)
    if reset:
        reset_peak_memory(device)
        return None
    return peak_memory_mb(device)


# ---- 1. the device-sensitive tests ----------------------------------------------------------------------------

def start_tests(plan: Plan) -> subprocess.Popen:
    env = {**os.environ, "LMTUNE_TEST_DEVICE": plan.device, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "pytest", *DEVICE_TESTS, "-q", "-p", "no:cacheprovider", "-k", plan.tests_select]
    log = open(plan.out / "tests.log", "w")  # noqa: SIM115 - closed by finish_tests
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finish_tests(plan: Plan, process: subprocess.Popen, deadline: float) -> dict:
    try:
        process.wait(timeout=max(1.0, deadline - time.perf_counter()))
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()
        timed_out = True
    text = (plan.out / "tests.log").read_text(errors="replace")
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|deselected)", text)}
    failures = re.findall(r"^(?:FAILED|ERROR) (.+)$", text, flags=re.M)
    result = {"returncode": process.returncode, "timed_out": timed_out, "counts": counts, "failures": failures[:20],
              "selection": f"LMTUNE_TEST_DEVICE={plan.device} pytest {' '.join(DEVICE_TESTS)} -k '{plan.tests_select}'",
              "tail": text[-1500:]}
    if timed_out or process.returncode != 0:
        raise RuntimeError(f"pytest {'timed out' if timed_out else f'exited {process.returncode}'}: {counts}; "
                           f"failures {failures[:5]}")
    return result


# ---- 2. every strategy: train → eval → predict → lmtune serve ------------------------------------------------

def strategies(plan: Plan, budget: Budget) -> dict:
    from lmtune.methods import STRATEGIES

    data = gsm8k_slices(plan)
    report: dict = {}
    for label in plan.models:
        model = model_folder(plan, label)
        root = plan.out / "runs" / label
        rows: dict = {}
        for name in STRATEGIES.names():
            if budget.left() < RESERVE_S:  # what sections 3–5 need once this one is done
                rows[name] = {"ok": False, "skipped": "time budget"}
                continue
            rows[name] = one_strategy(plan, model, data, root, name)
        served = serve_over_http(plan, model, root, rows)
        report[label] = {"model": str(model), "runs": rows, "serve": served}
    failed = [f"{label}/{name}" for label, entry in report.items() for name, row in entry["runs"].items()
              if not row.get("ok") or not row.get("served", {}).get("ok")]
    return {"ok": not failed, "failed": failed, **report}


def one_strategy(plan: Plan, model: Path, data: dict, root: Path, name: str) -> dict:
    from lmtune.runconfig import resolve_config
    from lmtune.train import train
    from lmtune.train.artifacts import load_run
    from lmtune.train.run_eval import evaluate_run

    started = time.perf_counter()
    row: dict = {}
    try:
        device_memory(plan, reset=True)
        method = {"name": name, **STRATEGY_OPTIONS.get(name, {})}
        result = train(resolve_config(run_config(plan, model, data, root, name, method)))
        row.update(dtype=result.config.model.dtype, precision=result.config.train.precision,
                   steps=result.metrics["global_step"], train_seconds=result.metrics["train_seconds"],
                   validation_loss=result.metrics["splits"]["validation"].get("loss"),
                   serve_kind=result.metrics["serve_kind"], peak_train_mb=device_memory(plan))
        del result
        evaluated = evaluate_run(root / name, "test")
        row["eval_test"] = {k: evaluated.get(k) for k in ("rows", "accuracy", "loss", "no_answer")}
        loaded = load_run(root / name)
        predicted = loaded.task.predict(loaded.model, [loaded.task.row_from_text("What is 2 plus 3?")])
        row["predict"] = predicted[0]["generation"][:80]
        row["ok"] = True
    except Exception as err:  # noqa: BLE001 - recorded; the next strategy runs
        row.update(ok=False, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-1500:])
    row["seconds"] = round(time.perf_counter() - started, 1)
    print(f"[gpu_check] {root.name}/{name}: {'ok' if row['ok'] else row['error']}", file=sys.stderr, flush=True)
    return row


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def lmtune_server(plan: Plan, base: Path, adapters: Path | None):
    """A real `lmtune serve` process; yields a client once /health answers."""
    from lmtune.serve.client import LmtuneClient

    port = free_port()
    command = [sys.executable, "-m", "lmtune", "serve", "--base", str(base), "--port", str(port),
               "--device", plan.device, "--dtype", plan.dtype, *(["--adapters", str(adapters)] if adapters else []),
               *(["--threads", str(plan.threads)] if plan.threads else []), "--log-level", "warning"]
    log = open(plan.out / f"serve-{port}.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = LmtuneClient(f"http://127.0.0.1:{port}", timeout=120)
    try:
        deadline = time.perf_counter() + 240
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"lmtune serve exited {process.returncode}: "
                                   + (plan.out / f"serve-{port}.log").read_text()[-1500:])
            with contextlib.suppress(Exception):
                if client.health()["status"] == "ok":
                    break
            if time.perf_counter() > deadline:
                raise RuntimeError("lmtune serve did not answer /health in 240 s")
            time.sleep(0.5)
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def serve_over_http(plan: Plan, model: Path, root: Path, rows: dict) -> dict:
    """One completion per trained run over HTTP: adapters on the shared base from one server, a full model as the
    base of its own server; forms a server cannot hold (freeze with layers saves only those) are recorded."""
    from lmtune.forms import form_named

    prompt = "Question: What is 2 plus 3?\nAnswer:"
    shared = [n for n, r in rows.items() if r.get("ok") and form_named(r["serve_kind"]).shares_base]
    own = [n for n, r in rows.items() if r.get("ok") and n not in shared]
    info: dict = {}
    if shared:
        with lmtune_server(plan, model, root) as client:
            info["base"] = client.health()
            for name in shared:
                rows[name]["served"] = _complete(client, prompt, name, plan)
    for name in own:
        folder = root / name / "model"
        if not (folder / "config.json").is_file():
            rows[name]["served"] = {"ok": True, "note": f"{rows[name]['serve_kind']} form without a model folder "
                                                         "(only its trained layers are saved): not servable"}
            continue
        with lmtune_server(plan, folder, None) as client:
            rows[name]["served"] = _complete(client, prompt, None, plan)
    return info


def _complete(client, prompt: str, adapter: str | None, plan: Plan) -> dict:
    started = time.perf_counter()
    reply = client.completion(prompt, adapter, max_tokens=plan.new_tokens, temperature=0)
    return {"ok": True, "text": reply["choices"][0]["text"][:60], "tokens": reply["usage"]["completion_tokens"],
            "seconds": round(time.perf_counter() - started, 2)}


# ---- 3. QLoRA ------------------------------------------------------------------------------------------------

def qlora(plan: Plan) -> dict:
    from lmtune.device import is_quantized
    from lmtune.errors import LmtuneError
    from lmtune.runconfig import resolve_config
    from lmtune.train import train
    from lmtune.train.run_eval import evaluate_run

    data = gsm8k_slices(plan)
    model = model_folder(plan, "llama-1.2b")
    raw = run_config(plan, model, data, plan.out / "runs" / "qlora", "lora-4bit", {"name": "lora", "rank": 16},
                     quantization="4bit")
    if plan.device == "cpu":
        try:
            train(resolve_config(raw))
        except LmtuneError as err:
            if "CUDA" in str(err) and "bitsandbytes" in str(err):
                return {"expected_refusal_on_cpu": str(err)}
            raise
        raise RuntimeError("model.quantization=4bit trained on a CPU: it must be refused")
    device_memory(plan, reset=True)
    result = train(resolve_config(raw))
    quantized = is_quantized(result.model.body)
    row = {"quantized_4bit": quantized, "steps": result.metrics["global_step"],
           "train_seconds": result.metrics["train_seconds"], "peak_train_mb": device_memory(plan),
           "validation_loss": result.metrics["splits"]["validation"].get("loss"),
           "adapter_bytes": result.metrics["adapter_bytes"]}
    del result
    evaluated = evaluate_run(plan.out / "runs" / "qlora" / "lora-4bit", "test")
    row["eval_test"] = {k: evaluated.get(k) for k in ("rows", "accuracy", "loss")}
    return {"ok": quantized, **row}


# ---- 4. training speed ---------------------------------------------------------------------------------------

def train_speed(plan: Plan) -> dict:
    model = model_folder(plan, "llama-1.2b")
    report: dict = {"shape": plan.models["llama-1.2b"], "seq": plan.speed_seq, "batch": plan.speed_batch}
    script = ROOT / "benchmarks" / "train_speed.py"
    for strategy in ("lora", "full"):
        entry: dict = {}
        if script.is_file():
            entry["lmtune"] = _train_speed_script(plan, script, strategy)
        else:
            entry["lmtune"] = {"error": f"{script.relative_to(ROOT)} not found (written on the `speed` branch)"}
        try:
            entry["peft_trainer"] = plain_trainer_speed(plan, model, strategy)
        except Exception as err:  # noqa: BLE001
            entry["peft_trainer"] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-1500:]}
        report[strategy] = entry
    # A missing train_speed.py is recorded, not a failure of this check; one that exists must run.
    failed = [f"{s}/{side}" for s in ("lora", "full") for side in ("lmtune", "peft_trainer")
              if "error" in report[s][side] and (side == "peft_trainer" or script.is_file())]
    return {"ok": not failed, "failed": failed, **report}


def _train_speed_script(plan: Plan, script: Path, strategy: str) -> dict:
    model = "smollm2" if plan.quick else "llama-1.2b"  # the script's 1.2B shape does not fit a CPU
    command = [sys.executable, str(script), "--model", model, "--strategy", strategy, "--seq", str(plan.speed_seq),
               "--batch", str(plan.speed_batch), "--steps", str(plan.speed_steps), "--json"]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 150 s", "command": " ".join(command)}
    lines = [line for line in done.stdout.splitlines() if line.strip().startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}", "stderr": done.stderr[-1500:], "command": " ".join(command)}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": "its output is not one JSON line", "stdout": done.stdout[-1500:]}


def plain_trainer_speed(plan: Plan, folder: Path, strategy: str) -> dict:
    """HF Trainer + PEFT as their docs show it: fp32 master weights under bf16 autocast (full), a bf16 base with
    fp32 LoRA r16 on every linear layer (LoRA); random tokens, no padding; steps after the first two are timed."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from lmtune.device import synchronize

    device = torch.device(plan.device)
    dtype = torch.bfloat16 if strategy == "lora" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    if strategy == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    count = plan.speed_batch * plan.speed_steps
    ids = torch.randint(0, vocab, (count, plan.speed_seq), generator=generator).tolist()
    dataset = Dataset.from_dict({"input_ids": ids, "labels": ids})
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            synchronize(device)
            times.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kwargs):
            synchronize(device)
            times.append(time.perf_counter())

    use_cpu = device.type == "cpu"
    args = TrainingArguments(output_dir=str(plan.out / "peft-trainer"), per_device_train_batch_size=plan.speed_batch,
                             max_steps=plan.speed_steps, learning_rate=1e-4, bf16=not use_cpu, use_cpu=use_cpu,
                             report_to="none", save_strategy="no", logging_steps=1000, disable_tqdm=True,
                             dataloader_num_workers=0)
    device_memory(plan, reset=True)
    Trainer(model=model, args=args, train_dataset=dataset, callbacks=[Clock()]).train()
    timed = times[2:] if len(times) > 3 else times
    seconds = timed[-1] - timed[0]
    tokens = (len(timed) - 1) * plan.speed_batch * plan.speed_seq
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    del model
    return {"tokens_per_s": round(tokens / seconds, 1), "peak_mb": device_memory(plan), "timed_steps": len(timed) - 1,
            "trainable_params": trainable, "weights": str(dtype).removeprefix("torch."),
            "autocast": "none" if use_cpu else "bf16"}


# ---- 5. serving speed ----------------------------------------------------------------------------------------

def serve_speed(plan: Plan) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import serve as serve_bench  # benchmarks/serve.py: adapters in PEFT's format, prompts, the request loop
    from lmtune.device import to_model_device
    from lmtune.serve.engine import Engine, EngineConfig

    base = model_folder(plan, "llama-1.2b")
    root = plan.out / "serve-adapters"
    names = serve_bench.make_adapters(base, root, 8)
    engine = Engine(str(base), root, EngineConfig(max_batch_size=plan.serve_batch, memory_budget_mb=8192,
                                                  device=plan.device, dtype=plan.dtype))
    engine.start()
    try:
        requests = serve_bench.prompts(plan.serve_requests, engine.tokenizer, 48)
        streams = {"base only": [None] * len(requests),
                   "8 mixed-kind adapters": [names["mixed"][i % 8] for i in range(len(requests))],
                   "8 LoRAs": [names["lora"][i % 8] for i in range(len(requests))]}
        lmtune = {}
        for label, adapters in streams.items():
            serve_bench.run_engine(engine, requests[:4], adapters[:4], 2)  # warm-up and first loads
            lmtune[label] = round(serve_bench.run_engine(engine, requests, adapters, plan.serve_tokens), 1)
    finally:
        engine.shutdown()
    dtype = torch.bfloat16 if plan.dtype != "auto" or plan.device != "cpu" else torch.float32
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=dtype), root / names["lora"][0],
                                           adapter_name=names["lora"][0])
    for name in names["lora"][1:]:
        peft_model.load_adapter(root / name, adapter_name=name)
    from lmtune.device import place

    place(peft_model.eval(), torch.device(plan.device))
    tokenizer = engine.tokenizer
    tokenizer.padding_side = "left"

    def hf_generate(adapters: list[str] | None) -> float:
        started = time.perf_counter()
        for start in range(0, len(requests), plan.serve_batch):
            rows = requests[start : start + plan.serve_batch]
            padded = to_model_device(dict(tokenizer.pad({"input_ids": rows}, return_tensors="pt")), peft_model)
            options = {"adapter_names": adapters[start : start + plan.serve_batch]} if adapters else {}
            with torch.inference_mode():
                peft_model.generate(**padded, max_new_tokens=plan.serve_tokens, min_new_tokens=plan.serve_tokens,
                                    do_sample=False, pad_token_id=tokenizer.pad_token_id, **options)
        return round(len(requests) * plan.serve_tokens / (time.perf_counter() - started), 1)

    with peft_model.disable_adapter():
        hf_generate(None)  # warm-up
        hf_base = hf_generate(None)
    hf_loras = hf_generate(streams["8 LoRAs"])
    return {"requests": len(requests), "new_tokens": plan.serve_tokens, "batch": plan.serve_batch,
            "dtype": str(dtype).removeprefix("torch."),
            "tokens_per_s": {"lmtune": lmtune, "hf_generate": {"base only": hf_base, "8 LoRAs (adapter_names)": hf_loras}}}


# ---- the run -------------------------------------------------------------------------------------------------

def machine(plan: Plan) -> str:
    import torch

    if plan.device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(plan.device))
    else:
        name = f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores"
    return f"{name}, torch {torch.__version__}, python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few steps (a CPU check of the script)")
    parser.add_argument("--budget", type=float, default=470, help="seconds for the whole check (default 470: < 8 min)")
    parser.add_argument("--out", default="benchmarks/out/gpu_check")
    parser.add_argument("--sections", default="tests,strategies,qlora,train_speed,serve_speed",
                        help="comma-separated subset to run")
    args = parser.parse_args()
    plan = Plan.make(args)
    plan.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    wanted = set(args.sections.split(","))
    budget = Budget(plan.budget_s)
    results: dict = {}
    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # Trainer's and lmtune's prints: one JSON object on stdout
        import torch

        if plan.threads:
            torch.set_num_threads(plan.threads)
        tests = start_tests(plan) if "tests" in wanted else None
        if "strategies" in wanted:
            run_section(results, "strategies", budget, 90, strategies, plan, budget)
        if "qlora" in wanted:
            run_section(results, "qlora", budget, 30, qlora, plan)
        if tests is not None:  # before the timings: the tests must not share the GPU with them
            deadline = time.perf_counter() + max(5.0, min(plan.tests_timeout_s, budget.left() - 120))
            run_section(results, "tests", budget, 0, finish_tests, plan, tests, deadline)
        if "train_speed" in wanted:
            run_section(results, "train_speed", budget, 60, train_speed, plan)
        if "serve_speed" in wanted:
            run_section(results, "serve_speed", budget, 45, serve_speed, plan)
    record = {"check": "gpu_check", "machine": machine(plan), "plan": {k: v for k, v in asdict(plan).items() if k != "out"},
              "elapsed_s": round(plan.budget_s - budget.left(), 1), "ok": all(r.get("ok") for r in results.values()),
              "sections": {name: results[name] for name in ("tests", "strategies", "qlora", "train_speed", "serve_speed")
                           if name in results}}
    text = json.dumps(record, indent=1, default=str)
    (plan.out / "gpu_check.json").write_text(text)
    print(text, file=real_stdout)
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
