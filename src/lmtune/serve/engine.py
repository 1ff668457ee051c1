"""The serving engine: one frozen base model, an adapter store, and a scheduler thread that batches requests
for different adapters (of different kinds) together, with continuous batching for generation.

Every forward pass runs on the scheduler thread. Requests are checked when they are submitted, so a bad request
fails alone with a clear error and never reaches a batch; an error inside a step fails only that step's rows.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import transformers
from pydantic import Field

from lmtune.config.schema import ModelConfig, StrictModel
from lmtune.errors import LmtuneError
from lmtune.models.loading import backbone_kind, load_backbone
from lmtune.evaluate.generation import end_ids_of
from lmtune.serve.artifact import read_adapter
from lmtune.serve.forms import ServedAdapter
from lmtune.serve.inputs import build_inputs, gather_text
from lmtune.serve.mixed import BatchPlan, DeltaHooks
from lmtune.serve.requests import ClassifyJob, GenerationEvent, Sequence_
from lmtune.serve.running import RunningBatch
from lmtune.serve.sampling import SamplingParams, next_token
from lmtune.serve.store import AdapterInfo, AdapterStore
from lmtune.serve.chat import chat_prompt
from lmtune.serve.classify import classify_rows, forward_heads

__all__ = ["Engine", "EngineConfig", "EngineObserver", "GenerationEvent", "Overloaded", "SamplingParams", "AdapterInfo"]


class Overloaded(LmtuneError):
    """The queue is full: try again after `retry_after` seconds (HTTP 429)."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class EngineObserver:
    """Hooks for metrics; called on the engine thread."""

    def on_step(self, batch_size: int, new_tokens: int, prefill_rows: int) -> None: ...

    def on_queue(self, depth: int) -> None: ...


class EngineConfig(StrictModel):
    max_batch_size: int = Field(32, gt=0)
    """Rows decoded together at most (generation), and rows per classification pass."""
    max_queue: int = Field(256, gt=0)
    """Requests waiting at most; more get `Overloaded` (HTTP 429)."""
    max_prompt_tokens: int | None = Field(None, gt=0)
    """Longest prompt accepted, in tokens; default: the model's context."""
    max_new_tokens_limit: int = Field(2048, gt=0)
    """The largest max_tokens a request may ask for."""
    memory_budget_mb: float = Field(1024, gt=0)
    """Loaded adapters at most this many MB; the least recently used are evicted (and reload on next use)."""
    device: str = "auto"
    """Where the base model runs: auto (cuda when available), cpu, cuda, cuda:1, ..."""


class Engine:
    def __init__(self, base: str, adapter_root: str | Path | None = None, cfg: EngineConfig | None = None,
                 observer: EngineObserver | None = None, num_threads: int | None = None):
        self.cfg = cfg or EngineConfig()
        self.observer = observer or EngineObserver()
        if num_threads:
            torch.set_num_threads(num_threads)
        self.base_name = base
        self._load_base(base)
        self.hooks = DeltaHooks(self.model)
        names = {base, str(self.base_path), self.base_path.name}
        self.store = AdapterStore(
            adapter_root,
            lambda name, folder: read_adapter(name, folder, self.model, self.weights_hash, names),
            int(self.cfg.memory_budget_mb * 2**20),
        )
        self._queue: deque = deque()
        self._jobs: deque[ClassifyJob] = deque()
        self._cancelled: set[str] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._ids = itertools.count()
        self._running: RunningBatch | None = None
        self._tokenizer_lock = threading.Lock()

    # ---- the base model ----------------------------------------------------------------------------------------
    def _load_base(self, base: str) -> None:
        from lmtune.models.loading import resolve_model_path

        path = resolve_model_path(ModelConfig(name=base))
        config = transformers.AutoConfig.from_pretrained(path)
        if getattr(config, "is_encoder_decoder", False):
            raise LmtuneError(f"{base} is an encoder-decoder model; the server holds decoder-only LMs and encoders")
        self.base_kind = backbone_kind(config)
        auto = "AutoModelForCausalLM" if self.base_kind == "decoder" else "AutoModel"
        backbone = load_backbone(ModelConfig(name=base), auto)
        device = self.cfg.device if self.cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = backbone.body.eval().requires_grad_(False).to(device)
        self.body = self.model.base_model  # the transformer without the LM head: classification heads read it
        self.tokenizer = backbone.tokenizer
        self.base_path, self.weights_hash = backbone.path, backbone.weights_hash
        self.end_ids = end_ids_of(self.tokenizer, self.model)
        self.context = int(getattr(config, "max_position_embeddings", 0) or 2048)

    # ---- submitting --------------------------------------------------------------------------------------------
    def adapter(self, name: str | None) -> ServedAdapter | None:
        if name in (None, "", self.base_name):
            return None
        return self.store.get(name)

    def submit_generation(self, prompt: str | list[int], adapter: str | None, params: SamplingParams,
                          on_event: Callable[[GenerationEvent], None]) -> str:
        if self.base_kind != "decoder":
            raise LmtuneError(f"the base model {self.base_name} is an encoder: it classifies (/v1/classify) but cannot generate")
        params.check(self.cfg.max_new_tokens_limit)
        served = self.adapter(adapter)
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        self._check_prompt(ids, served, params.max_tokens)
        sequence = Sequence_(f"req-{next(self._ids)}", ids, served, params, on_event, params.generator())
        self._enqueue(self._queue, sequence)
        return sequence.id

    def submit_classification(self, texts: list[str], adapter: str, on_done: Callable) -> str:
        if not texts or not all(isinstance(t, str) for t in texts):
            raise LmtuneError("classification needs a non-empty list of texts")
        served = self.adapter(adapter)
        if served is None or served.head is None:
            raise LmtuneError(f"{adapter or self.base_name!r} has no classification head; name a classification adapter")
        job = ClassifyJob(f"cls-{next(self._ids)}", texts, served, on_done)
        self._enqueue(self._jobs, job)
        return job.id

    def _check_prompt(self, ids: list[int], served: ServedAdapter | None, max_tokens: int) -> None:
        if not ids:
            raise LmtuneError("the prompt is empty")
        extra = served.body.virtual_tokens() if served is not None and served.body is not None else 0
        limit = self.cfg.max_prompt_tokens or self.context
        if len(ids) > limit or len(ids) + extra + max_tokens > self.context:
            raise LmtuneError(
                f"the prompt has {len(ids)} tokens (+{extra} virtual) and asks for {max_tokens} new ones; the model's "
                f"context is {self.context} tokens (prompt limit {limit}): shorten the prompt or lower max_tokens"
            )

    def _enqueue(self, queue: deque, item) -> None:
        with self._wake:
            if self.queue_depth() >= self.cfg.max_queue:
                raise Overloaded(f"the server is busy ({self.queue_depth()} requests waiting); retry shortly", 1.0)
            queue.append(item)
            self.observer.on_queue(self.queue_depth())
            self._wake.notify()

    def cancel(self, request_id: str) -> None:
        """Stop a request: a waiting one leaves the queue at once, a running one at the next step."""
        with self._wake:
            waiting = [s for s in self._queue if s.id == request_id]
            jobs = [j for j in self._jobs if j.id == request_id]
            for item in waiting:
                self._queue.remove(item)
            for job in jobs:
                self._jobs.remove(job)
            running = self._running
            if running is not None and any(row.id == request_id for row in running.rows):
                self._cancelled.add(request_id)
            self._wake.notify()
        for sequence in waiting:
            sequence.finish("cancelled")
        for job in jobs:
            job.on_done(LmtuneError("cancelled"))

    def chat_prompt(self, messages: list[dict], adapter: str | None) -> tuple[list[int], list[str]]:
        """A chat request's prompt ids and stop strings, rendered as `adapter` was trained (serve/chat.py)."""
        return chat_prompt(self, messages, self.adapter(adapter))

    def tokenize(self, text: str, **options) -> list[int]:
        """Thread-safe: fast tokenizers refuse concurrent use ("Already borrowed"), and requests arrive on many threads."""
        with self._tokenizer_lock:
            return self.tokenizer(text, **options)["input_ids"]

    def queue_depth(self) -> int:
        return len(self._queue) + len(self._jobs)

    # ---- the scheduler -----------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="lmtune-engine", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        """Stop the scheduler; every unfinished request gets its final event ("cancelled")."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._wake:
            waiting, jobs, self._queue, self._jobs = list(self._queue), list(self._jobs), deque(), deque()
        for sequence in waiting + (self._running.rows if self._running else []):
            sequence.finish("cancelled")
        for job in jobs:
            job.on_done(LmtuneError("the server is shutting down"))
        self._running = None

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self._queue and not self._jobs and self._running is None:
                    self._wake.wait()
                if self._stop:
                    return
            with torch.inference_mode():
                self._classify_pending()
                self._generation_step()

    def _classify_pending(self) -> None:
        jobs = []
        with self._wake:
            while self._jobs and sum(len(j.texts) for j in jobs) < self.cfg.max_batch_size:
                jobs.append(self._jobs.popleft())
        if jobs:
            classify_rows(self, jobs)

    def _generation_step(self) -> None:
        admitted = []
        with self._wake:
            free = self.cfg.max_batch_size - (len(self._running) if self._running else 0)
            while self._queue and len(admitted) < free:
                admitted.append(self._queue.popleft())
            self.observer.on_queue(self.queue_depth())
        try:
            for group in length_groups(admitted):
                batch = self._prefill(group)
                if batch is not None:
                    self._running = batch if self._running is None else self._running.merge(batch)
            if self._running is not None:
                self._decode()
        except Exception as err:  # noqa: BLE001 - a failing step fails its rows, never the server
            rows = (self._running.rows if self._running else []) + [s for s in admitted if not s.finished]
            for sequence in rows:
                sequence.fail(f"{type(err).__name__}: {err}")
            self._running = None

    def _prefill(self, sequences: list[Sequence_]) -> RunningBatch:
        inputs = build_inputs(self.model.get_input_embeddings(), [s.prompt_ids for s in sequences],
                              [s.adapter for s in sequences], left_pad=True, pad_id=self.tokenizer.pad_token_id)
        plan = BatchPlan([s.adapter for s in sequences])
        with self.hooks.active(plan):
            output = self.model(**inputs.model_kwargs(), use_cache=True, logits_to_keep=1)
        cache = output.past_key_values
        batch = RunningBatch(sequences, plan, cache, inputs.attention_mask, inputs.next_position,
                             torch.zeros(len(sequences), dtype=torch.long, device=inputs.attention_mask.device))
        return batch.keep(self._sample(batch, output.logits[:, -1], prefill_rows=len(sequences)))

    def _decode(self) -> None:
        batch = self._running
        with self.hooks.active(batch.plan):
            output = self.model(**batch.step_inputs(), logits_to_keep=1)
        batch.next_position = batch.next_position + 1
        self._running = batch.keep(self._sample(batch, output.logits[:, -1], prefill_rows=0))

    def _sample(self, batch: RunningBatch, logits: torch.Tensor, prefill_rows: int) -> list[int]:
        """Choose, record and announce each row's next token; return the rows that go on."""
        greedy = logits.argmax(dim=-1).tolist()
        keep = []
        with self._wake:
            cancelled = self._cancelled & {s.id for s in batch.rows}
            self._cancelled -= cancelled
        for row, sequence in enumerate(batch.rows):
            if sequence.id in cancelled:
                sequence.finish("cancelled")
                continue
            params = sequence.params
            token = greedy[row] if params.temperature == 0 else next_token(logits[row], params, sequence.generator)
            batch.pending[row] = token
            sequence.accept(token, self.tokenizer, self.end_ids)
            if not sequence.finished:
                keep.append(row)
        self.observer.on_step(len(batch), len(batch), prefill_rows)
        return keep

    # ---- blocking conveniences (tests, benchmarks, the Python API) ----------------------------------------------
    @torch.inference_mode()
    def prefill_logits(self, token_rows: Sequence[list[int]], adapters: Sequence[str | None],
                       reference: bool = False) -> list[torch.Tensor]:
        """Each row's LM logits at each of its text positions, all rows in one mixed pass (the parity tests'
        view of the engine). `reference=True` applies weight deltas one adapter at a time, the slow path."""
        served = [self.adapter(a) for a in adapters]
        inputs = build_inputs(self.model.get_input_embeddings(), token_rows, served, left_pad=True,
                              pad_id=self.tokenizer.pad_token_id)
        with self.hooks.active(BatchPlan(served, reference)):
            logits = self.model(**inputs.model_kwargs(), use_cache=False).logits
        text_logits = gather_text(logits, inputs)
        return [text_logits[i, : len(ids)] for i, ids in enumerate(token_rows)]

    @torch.inference_mode()
    def head_logits(self, token_rows: Sequence[list[int]], adapters: Sequence[str], reference: bool = False) -> list[torch.Tensor]:
        """Each row's classification logits from its adapter's head, all rows in one mixed pass."""
        return forward_heads(self, token_rows, [self.adapter(a) for a in adapters], reference)

    def generate(self, prompts: Sequence[str | list[int]], adapters: Sequence[str | None], params: SamplingParams) -> list[str]:
        self.start()
        results: dict[int, list[GenerationEvent]] = {i: [] for i in range(len(prompts))}
        done = [threading.Event() for _ in prompts]
        for i, (prompt, adapter) in enumerate(zip(prompts, adapters)):
            def collect(event, i=i):
                results[i].append(event)
                if event.finished:
                    done[i].set()
            self.submit_generation(prompt, adapter, params, collect)
        for event in done:
            event.wait()
        failures = [e.error for events in results.values() for e in events if e.error]
        if failures:
            raise LmtuneError(failures[0])
        return ["".join(e.text for e in results[i]) for i in range(len(prompts))]

    def classify(self, texts: list[str], adapter: str) -> list[dict]:
        self.start()
        box: list = []
        done = threading.Event()
        self.submit_classification(texts, adapter, lambda result: (box.append(result), done.set()))
        done.wait()
        if isinstance(box[0], Exception):
            raise box[0]
        return box[0]


def length_groups(sequences: list[Sequence_], slack: float = 1.25) -> list[list[Sequence_]]:
    """Prefill groups of similar length (prompt + virtual tokens): a batch pads every row to its longest, and a
    20-token soft prompt beside plain rows would make all of them 20 tokens longer. Groups merge after prefill."""
    def length(s: Sequence_) -> int:
        return len(s.prompt_ids) + (s.adapter.body.virtual_tokens() if s.adapter and s.adapter.body else 0)

    groups: list[list[Sequence_]] = []
    for sequence in sorted(sequences, key=length):
        if groups and length(sequence) <= slack * length(groups[-1][0]):
            groups[-1].append(sequence)
        else:
            groups.append([sequence])
    return groups
