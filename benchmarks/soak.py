"""Soak test for `lmtune serve` (issue 14): N concurrent clients for a bounded time against a real server on
127.0.0.1, mixing good requests with every hostile one the issue found, hang-ups and adapter load/unload.

    python benchmarks/soak.py --seconds 60 --clients 8

It builds a tiny random Llama and trains two tiny adapters on it (generation LoRA, classification LoRA) in a
temporary folder, adds broken adapters beside them (a pickle named .safetensors, a truncated file, a header that
claims a terabyte, an adapter_config.json that is a list, NaN weights, files linked from outside the root), starts
`lmtune serve` as its own process and then reports requests served, outcomes by kind, p50/p99 latency of the
good requests and the server's peak RSS. It fails (exit 1) when any request got an answer other than the one its
kind must get, when the peak RSS passes --max-rss-mb, or when the server does not answer correctly at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

KEY = "soak-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
WORDS = "red blue green black white big small old new".split()
PROMPT = "copy red 3"
MAX_BODY_MB = 1


def build(folder: Path) -> tuple[Path, Path]:
    """(tiny base model, adapter root with gen-lora, cls-lora and the broken adapters)."""
    import torch
    from safetensors.torch import load_file, save_file

    from lmtune.data.templates import ALPACA
    from lmtune.models.tiny import build_tiny_model
    from lmtune.runconfig import resolve_config
    from lmtune.train import train

    rng = random.Random(0)
    gen = [{"instruction": f"copy {rng.choice(WORDS)} {n % 10}", "input": "", "output": f"the answer is {n % 10}"}
           for n in range(32)]
    cls = [{"text": f"{rng.choice(WORDS)} {'great' if n % 2 else 'awful'} item", "label": "pos" if n % 2 else "neg"}
           for n in range(32)]
    for name, rows in (("gen", gen), ("cls", cls)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = build_tiny_model("llama", folder / "llama", [ALPACA, " ".join(WORDS), "the answer is 0 1 2 3 4 5 6 7 8 9",
                                                         "great awful item pos neg"])
    root = folder / "runs"
    for name, data, task in (("gen-lora", "gen", "instruction"), ("cls-lora", "cls", "classification")):
        raw = {"model": {"name": str(model), "max_length": 48},
               "data": {"train": str(folder / f"{data}.jsonl"), "validation": str(folder / f"{data}.jsonl")},
               "method": {"name": "lora", "rank": 4},
               "train": {"batch_size": 16, "progress": False, "num_threads": 1, "max_steps": 2, "eval_every": "no"},
               "output": {"dir": str(root), "name": name}}
        if task != "classification":
            raw["task"] = {"name": task, "generation": {"max_new_tokens": 4, "batch_size": 8}}
        train(resolve_config(raw))
    weights = "adapter_model.safetensors"

    def broken(name: str, file: str, write) -> None:
        target = shutil.copytree(root / "gen-lora", root / name)
        write(target / file)

    broken("broken-pickle", weights, lambda p: torch.save({"w": torch.ones(2)}, p))
    broken("broken-truncated", weights, lambda p: p.write_bytes(p.read_bytes()[:40]))
    broken("broken-header", weights, lambda p: p.write_bytes(struct.pack("<Q", 2**40) + b"{}"))
    broken("broken-config", "adapter_config.json", lambda p: p.write_text("[1, 2]"))

    def nan(path: Path) -> None:
        tensors = load_file(path)
        tensors = {k: torch.full_like(v, float("nan")) for k, v in tensors.items()}
        save_file(tensors, path)

    broken("broken-nan", weights, nan)
    outside = shutil.copytree(root / "gen-lora", folder / "outside")
    (root / "linked").mkdir()
    for file in outside.iterdir():
        (root / "linked" / file.name).symlink_to(file)
    return model, root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def lazy_body(total: int):
    chunk = b"x" * 2**16
    for _ in range(total // len(chunk)):
        yield chunk


# ---- the request kinds: (what to send, the status it must get) -------------------------------------------------


def post(c: httpx.Client, route: str, body: dict, **kw) -> int:
    return c.post(route, content=json.dumps(body).encode(), headers={**AUTH, "Content-Type": "application/json"},
                  **kw).status_code


def completion(**extra) -> dict:
    return {"model": "gen-lora", "prompt": PROMPT, "max_tokens": 16, **extra}


def stream(c: httpx.Client, hang_up: bool) -> int:
    body = {**completion(max_tokens=48), "stream": True}
    with c.stream("POST", "/v1/completions", json=body, headers=AUTH) as response:
        for line in response.iter_lines():
            if hang_up or line == "data: [DONE]":
                break  # hang_up: leave after the first chunk
        return response.status_code


def hang_up_plain(c: httpx.Client) -> int:
    try:
        c.post("/v1/completions", json=completion(max_tokens=200), headers=AUTH, timeout=httpx.Timeout(10, read=0.05))
    except httpx.ReadTimeout:
        return 499  # we left; the server must cancel the generation
    return 200  # finished within 50 ms: nothing to cancel


def load_unload(c: httpx.Client, name: str) -> int:
    loaded = post(c, "/v1/adapters", {"name": name, "path": "gen-lora"})
    used = post(c, "/v1/completions", completion(model=name, max_tokens=4))
    gone = c.delete(f"/v1/adapters/{name}", headers=AUTH).status_code
    return 200 if (loaded, used, gone) == (201, 200, 200) else 500


def no_key_huge(c: httpx.Client) -> int:
    size = 64 * 2**20
    return c.post("/v1/completions", content=lazy_body(size), headers={"Content-Length": str(size)}).status_code


KINDS = {
    # good
    "good completion": (lambda c, i: post(c, "/v1/completions", completion()), {200}),
    "good stream": (lambda c, i: stream(c, hang_up=False), {200}),
    "good chat": (lambda c, i: post(c, "/v1/chat/completions", {"model": "gen-lora", "max_tokens": 8,
                                                                 "messages": [{"role": "user", "content": PROMPT}]}), {200}),
    "good classify": (lambda c, i: post(c, "/v1/classify", {"model": "cls-lora", "input": ["great item", "awful"]}), {200}),
    "tiny temperature": (lambda c, i: post(c, "/v1/completions", completion(temperature=5e-324)), {200}),
    "tiny top_p": (lambda c, i: post(c, "/v1/completions", completion(temperature=1, top_p=1e-300)), {200}),
    "load/unload": (lambda c, i: load_unload(c, f"soak-{i}-{random.randrange(10**6)}"), {200}),
    # hostile
    "token out of vocabulary": (lambda c, i: post(c, "/v1/completions", completion(prompt=[999999999])), {400}),
    "negative token": (lambda c, i: post(c, "/v1/completions", completion(prompt=[-5])), {400}),
    "seed 2**64": (lambda c, i: post(c, "/v1/completions", completion(seed=2**64, temperature=1)), {400}),
    "surrogate prompt": (lambda c, i: post(c, "/v1/completions", completion(prompt="hi \ud800")), {400}),
    "surrogate classify": (lambda c, i: post(c, "/v1/classify", {"model": "cls-lora", "input": "hi \ud800"}), {400}),
    "empty classify": (lambda c, i: post(c, "/v1/classify", {"model": "cls-lora", "input": [""]}), {400}),
    "1000 classify inputs": (lambda c, i: post(c, "/v1/classify", {"model": "cls-lora", "input": ["hi"] * 1000}), {400}),
    "huge prompt": (lambda c, i: post(c, "/v1/completions", completion(prompt="red " * 200_000)), {400}),
    "body over the limit": (lambda c, i: post(c, "/v1/completions", completion(prompt="red " * 400_000)), {413}),
    "64 MB without a key": (lambda c, i: no_key_huge(c), {401}),
    "docs without a key": (lambda c, i: c.get("/openapi.json").status_code, {401}),
    "hang-up (plain)": (lambda c, i: hang_up_plain(c), {499, 200}),
    "hang-up (stream)": (lambda c, i: stream(c, hang_up=True), {200}),
    **{f"load {name}": ((lambda name: lambda c, i: post(c, "/v1/adapters", {"name": f"x{i}", "path": name}))(name), {400})
       for name in ("broken-pickle", "broken-truncated", "broken-header", "broken-config", "broken-nan", "linked")},
    **{f"use {name}": ((lambda name: lambda c, i: post(c, "/v1/completions", completion(model=name)))(name), {400})
       for name in ("broken-pickle", "broken-config", "linked")},
}
GOOD = {"good completion", "good stream", "good chat", "good classify"}


def client_loop(url: str, index: int, until: float, outcomes: dict, latencies: dict, lock: threading.Lock) -> None:
    rng = random.Random(index)
    names = list(KINDS)
    weights = [6 if name in GOOD else 1 for name in names]
    with httpx.Client(base_url=url, timeout=60) as c:
        while time.time() < until:
            kind = rng.choices(names, weights)[0]
            call, allowed = KINDS[kind]
            started = time.perf_counter()
            try:
                status = call(c, index)
            except httpx.HTTPError as err:
                status = type(err).__name__
            elapsed = time.perf_counter() - started
            with lock:
                outcomes[kind][("ok" if status in allowed else f"WRONG {status}")] += 1
                if kind in GOOD and status in allowed:
                    latencies[kind].append(elapsed)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long the clients run")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--max-rss-mb", type=float, default=1500, help="the server's peak RSS must stay under this")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="lmtune-soak-"))
    os.environ.setdefault("LMTUNE_CACHE", str(folder / "cache"))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # training chatter off the report
            model, root = build(folder)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "lmtune", "serve", "--base", str(model), "--adapters", str(root),
                   "--api-key", KEY, "--port", str(port), "--max-batch-size", "8", "--threads", str(args.threads),
                   "--max-body-mb", str(MAX_BODY_MB), "--max-classify-inputs", "64", "--log-level", "error"]
        server = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        return run(args, server, url)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(args, server: subprocess.Popen, url: str) -> int:
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        with httpx.Client(base_url=url, timeout=60) as c:
            reference = c.post("/v1/completions", json=completion(), headers=AUTH).json()["choices"][0]["text"]
        start_rss, peak = rss_mb(server.pid), [0.0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb(server.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        outcomes: dict = defaultdict(Counter)
        latencies: dict = defaultdict(list)
        lock = threading.Lock()
        until = time.time() + args.seconds
        clients = [threading.Thread(target=client_loop, args=(url, i, until, outcomes, latencies, lock))
                   for i in range(args.clients)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        with httpx.Client(base_url=url, timeout=60) as c:
            final = c.post("/v1/completions", json=completion(), headers=AUTH).json()["choices"][0]["text"]
            health = c.get("/health")
        stop.set()
        sampler.join()
        return report(args, outcomes, latencies, start_rss, peak[0], reference == final, health)
    finally:
        server.terminate()
        server.wait(timeout=30)


def report(args, outcomes, latencies, start_rss, peak, same, health) -> int:
    total = sum(sum(c.values()) for c in outcomes.values())
    wrong = {kind: {k: v for k, v in c.items() if k != "ok"} for kind, c in outcomes.items()}
    wrong = {kind: c for kind, c in wrong.items() if c}
    good = [t for kind in GOOD for t in latencies[kind]]
    print(f"soak: {args.clients} clients for {args.seconds:.0f} s, {total} requests "
          f"({sum(outcomes[k]['ok'] for k in GOOD)} good ones served)")
    for kind in KINDS:
        if outcomes[kind]:
            print(f"  {kind:28s} {dict(outcomes[kind])}")
    print(f"good-request latency: p50 {percentile(good, 0.5) * 1000:.0f} ms, p99 {percentile(good, 0.99) * 1000:.0f} ms")
    print(f"server RSS: {start_rss:.0f} MB at the start, peak {peak:.0f} MB (bound {args.max_rss_mb:.0f} MB)")
    print(f"at the end: /health {health.status_code}, the same completion as at the start: {same}")
    failures = []
    if wrong:
        failures.append(f"unexpected answers: {wrong}")
    if peak > args.max_rss_mb:
        failures.append(f"peak RSS {peak:.0f} MB over the bound")
    if not same or health.status_code != 200:
        failures.append("the server did not answer correctly at the end")
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
