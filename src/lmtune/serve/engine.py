"""The serving engine: one frozen base model, an adapter store, and a scheduler thread that batches requests
for different adapters (of different kinds) together, with continuous batching for generation.

Every forward pass runs on the scheduler thread (serve/scheduler.py). Requests are checked when they are submitted
(token ids in the vocabulary, finite sampling numbers, text that encodes, lengths within the limits, classification
texts tokenised here and not on that thread), so a bad request fails alone with a clear error and never reaches a
batch; an error inside a step still fails only the row that causes it.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import transformers

from lmtune.config.schema import ModelConfig
from lmtune.device import named_device, place
from lmtune.errors import LmtuneError
from lmtune.evaluate.generation import end_ids_of
from lmtune.models.loading import backbone_kind, load_backbone
from lmtune.models.pooling import last_layers
from lmtune.serve.artifact import read_adapter
from lmtune.serve.chat import chat_prompt
from lmtune.serve.classify import forward_heads, head_layers_of
from lmtune.serve.config import EngineConfig
from lmtune.serve.forms import ServedAdapter
from lmtune.serve.inputs import build_inputs, gather_text
from lmtune.serve.mixed import BatchPlan, DeltaHooks
from lmtune.serve.requests import ClassifyJob, GenerationEvent, Sequence_
from lmtune.serve.running import RunningBatch
from lmtune.serve.sampling import SamplingParams
from lmtune.serve.scheduler import Scheduler
from lmtune.serve.store import AdapterInfo, AdapterStore
from lmtune.serve.structured import JsonGrammars

__all__ = ["Engine", "EngineConfig", "EngineDead", "EngineObserver", "GenerationEvent", "Overloaded", "SamplingParams",
           "AdapterInfo"]


class Overloaded(LmtuneError):
    """The queue is full: try again after `retry_after` seconds (HTTP 429)."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class EngineDead(LmtuneError):
    """The scheduler thread has stopped: nothing can be served (HTTP 503; /health says why)."""


class EngineObserver:
    """Hooks for metrics; called on the engine thread."""

    def on_step(self, batch_size: int, new_tokens: int, prefill_rows: int) -> None: ...

    def on_queue(self, depth: int) -> None: ...


class Engine(Scheduler):
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
            lambda name, folder: read_adapter(name, folder, self.model, self.weights_hash, names, self.store.root),
            int(self.cfg.memory_budget_mb * 2**20),
        )
        self._queue: deque = deque()
        self._jobs: deque[ClassifyJob] = deque()
        self._cancelled: set[str] = set()
        self._admitting: set[str] = set()
        """Requests taken off the queue whose prefill is running: in neither `_queue` nor `_running` yet."""
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._ids = itertools.count()
        self._running: RunningBatch | None = None
        self._tokenizer_lock = threading.Lock()
        self._token_texts: dict[int, str] = {}
        self.failure: str | None = None
        """Why the scheduler thread stopped, when it did (shown by /health)."""

    # ---- the base model ----------------------------------------------------------------------------------------
    def _load_base(self, base: str) -> None:
        from lmtune.models.loading import resolve_model_path

        path = resolve_model_path(ModelConfig(name=base))
        config = transformers.AutoConfig.from_pretrained(path)
        if getattr(config, "is_encoder_decoder", False):
            raise LmtuneError(f"{base} is an encoder-decoder model; the server holds decoder-only LMs and encoders")
        self.base_kind = backbone_kind(config)
        auto = "AutoModelForCausalLM" if self.base_kind == "decoder" else "AutoModel"
        device = named_device(self.cfg.device)
        dtype = self.cfg.dtype if self.cfg.dtype != "auto" or device.type != "cpu" else "float32"
        backbone = load_backbone(ModelConfig(name=base, dtype=dtype), auto)
        self.model = place(backbone.body.eval().requires_grad_(False), device)
        self.body = self.model.base_model  # the transformer without the LM head: classification heads read it
        self.tokenizer = backbone.tokenizer
        self.base_path, self.weights_hash = backbone.path, backbone.weights_hash
        self.pooling, self.normalize_embeddings = backbone.pooling, normalizes(backbone.path)
        self.hidden_size = int(self.model.config.hidden_size)
        self.end_ids = end_ids_of(self.tokenizer, self.model)
        self.context = int(getattr(config, "max_position_embeddings", 0) or 2048)
        self.vocab_size = self.model.get_input_embeddings().num_embeddings
        self.max_token_chars = max_token_chars(self.tokenizer)
        self.json_grammars = JsonGrammars(self.tokenizer, self.vocab_size, self.end_ids)

    # ---- submitting --------------------------------------------------------------------------------------------
    def adapter(self, name: str | None) -> ServedAdapter | None:
        if name in (None, "", self.base_name):
            return None
        return self.store.get(name)

    def adapter_names(self) -> list[str]:
        """Every adapter's name, loaded or not (cheaper than the store's listing: no per-adapter info)."""
        return self.store.names()

    def submit_generation(self, prompt: str | list[int], adapter: str | None, params: SamplingParams,
                          on_event: Callable[[GenerationEvent], None]) -> str:
        """Queue `prompt` for `params.n` rows (one prefill); `on_event` hears each row's events (`event.index`)."""
        if self.base_kind != "decoder":
            raise LmtuneError(f"the base model {self.base_name} is an encoder: it classifies (/v1/classify) but cannot generate")
        self._check_alive()
        params.check(self.cfg.max_new_tokens_limit, self.vocab_size, self.cfg.max_logprobs)
        rows_limit = min(self.cfg.max_rows_per_request, self.cfg.max_batch_size)
        if not 1 <= params.n <= rows_limit:
            raise LmtuneError(f"a request may generate at most {rows_limit} rows (n, best_of, prompts; the server's "
                              f"limit), not {params.n}: send several requests")
        served = self.adapter(adapter)
        ids = self.tokenize(prompt, limit=self.prompt_limit) if isinstance(prompt, str) else self._check_ids(prompt)
        self._check_prompt(ids, served, params.max_tokens)
        compiled = self.json_grammars.compile(*params.response_format) if params.response_format else None
        request_id = f"req-{next(self._ids)}"
        rows = [Sequence_(request_id, ids, served, params, on_event, params.generator(i), index=i,
                          grammar=self.json_grammars.row(compiled) if compiled is not None else None)
                for i in range(params.n)]
        self._enqueue(self._queue, rows)
        return request_id

    def token_text(self, token: int) -> str:
        """One token's text as logprobs show it (cached: the same ids come back at every step)."""
        text = self._token_texts.get(token)
        if text is None:
            text = self._token_texts[token] = self.tokenizer.decode([token])
        return text

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(self._check_ids(ids))

    def submit_classification(self, texts: list[str], adapter: str, on_done: Callable) -> str:
        served = self.adapter(adapter)
        if served is None or served.head is None:
            raise LmtuneError(f"{adapter or self.base_name!r} has no classification head; name a classification adapter")
        return self._submit_rows(texts, served, on_done, embed=False)

    def submit_embedding(self, inputs: list[str | list[int]], adapter: str | None, on_done: Callable) -> str:
        """Each input's embedding with `adapter` applied (None: the base model), pooled as `classify.embedding` says."""
        return self._submit_rows(inputs, self.adapter(adapter), on_done, embed=True)

    def _submit_rows(self, texts: list, served: ServedAdapter | None, on_done: Callable, embed: bool) -> str:
        self._check_alive()
        if not texts or not all(isinstance(t, (str, list)) for t in texts):
            raise LmtuneError("the input must be a non-empty list of texts (or token-id lists)")
        if len(texts) > self.cfg.max_classify_inputs:
            raise LmtuneError(f"{len(texts)} inputs in one request; the server takes at most "
                              f"{self.cfg.max_classify_inputs} (--max-classify-inputs): send several requests")
        limit = (served.max_length if served is not None else None) or self.context
        rows = [self.tokenize(text, truncate=limit, truncation=True, max_length=limit) if isinstance(text, str)
                else self._check_ids(text)[:limit] for text in texts]
        empty = [i for i, row in enumerate(rows) if not row]
        if empty:
            raise LmtuneError(f"input {empty[0]} is empty (no tokens): every input needs some text")
        job = ClassifyJob(f"cls-{next(self._ids)}", rows, served, on_done, embed=embed)
        self._enqueue(self._jobs, job)
        return job.id

    @property
    def has_fim_tokens(self) -> bool:
        """Whether the tokenizer has fill-in-the-middle tokens (StarCoder's spelling; SmolLM2's has none)."""
        return "<fim_middle>" in self.tokenizer.get_vocab()

    @property
    def has_tool_template(self) -> bool:
        """Whether the base's chat template reads tools (lmtune does not parse tool calls yet either way)."""
        return "tools" in (self.tokenizer.chat_template or "")

    @property
    def prompt_limit(self) -> int:
        return min(self.cfg.max_prompt_tokens or self.context, self.context)

    def _check_alive(self) -> None:
        if self.failure is not None:
            raise EngineDead(f"the engine has stopped ({self.failure}); restart the server")

    def _check_ids(self, prompt: list[int]) -> list[int]:
        """Token ids as the embedding takes them: an id outside the vocabulary would fail the whole batch's step."""
        ids = list(prompt)
        bad = next((t for t in ids if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise LmtuneError(f"token id {bad!r} is outside the vocabulary: ids must be integers from 0 to "
                              f"{self.vocab_size - 1}")
        return ids

    def _check_prompt(self, ids: list[int], served: ServedAdapter | None, max_tokens: int) -> None:
        if not ids:
            raise LmtuneError("the prompt is empty")
        extra = served.body.virtual_tokens() if served is not None and served.body is not None else 0
        limit = self.prompt_limit
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
        """Stop a request: a waiting one leaves the queue at once, one being prefilled or running at its next
        token."""
        with self._wake:
            waiting = [rows for rows in self._queue if rows[0].id == request_id]
            jobs = [j for j in self._jobs if j.id == request_id]
            for item in waiting:
                self._queue.remove(item)
            for job in jobs:
                self._jobs.remove(job)
            running = self._running
            if request_id in self._admitting or (running is not None and any(row.id == request_id for row in running.rows)):
                self._cancelled.add(request_id)  # the prefill's own sampling or the next step ends it
            self._wake.notify()
        for sequence in (s for rows in waiting for s in rows):
            sequence.finish("cancelled")
        for job in jobs:
            job.on_done(LmtuneError("cancelled"))

    def chat_prompt(self, messages: list[dict], adapter: str | None) -> tuple[list[int], list[str]]:
        """A chat request's prompt ids and stop strings, rendered as `adapter` was trained (serve/chat.py)."""
        return chat_prompt(self, messages, self.adapter(adapter))

    def tokenize(self, text: str, limit: int | None = None, truncate: int | None = None, **options) -> list[int]:
        """Thread-safe: fast tokenizers refuse concurrent use ("Already borrowed"), and requests arrive on many threads.

        Cheap checks come first, outside the lock, so a hostile text never holds it: text that cannot be UTF-8
        (a lone surrogate) is refused; with `limit` (tokens), a text too long to fit whatever it holds is refused
        before tokenising; with `truncate` (tokens), only the characters that can reach that many tokens are read."""
        if not isinstance(text, str):
            raise LmtuneError(f"expected text, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise LmtuneError(f"the text is not valid Unicode ({err.reason} at character {err.start}): "
                              "send UTF-8 text without lone surrogates") from None
        if limit is not None and len(text) > (limit + 1) * self.max_token_chars:
            raise LmtuneError(f"the text has {len(text)} characters, more than {limit} tokens can hold (the prompt limit "
                              f"within the model's context of {self.context} tokens): shorten it")
        if truncate is not None:
            text = text[: (truncate + 2) * self.max_token_chars]
        with self._tokenizer_lock:
            ids = self.tokenizer(text, **options)["input_ids"]
        return ids  # the token count itself is checked against the context by _check_prompt

    def queue_depth(self) -> int:
        return len(self._queue) + len(self._jobs)

    # ---- the scheduler -----------------------------------------------------------------------------------------
    def alive(self) -> bool:
        """False once the scheduler thread has died (it was started and is no longer running, or it failed)."""
        return self.failure is None and (self._thread is None or self._thread.is_alive() or self._stop)

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop = False
            self.failure = None
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
        for sequence in [s for rows in waiting for s in rows] + (self._running.rows if self._running else []):
            sequence.finish("cancelled")
        for job in jobs:
            job.on_done(LmtuneError("the server is shutting down"))
        self._running = None

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

    def text_hidden_states(self, token_rows: Sequence[list[int]], adapters: Sequence[ServedAdapter | None],
                           reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The body's last hidden states at each row's text positions, and their mask: all rows in one pass, each
        with its adapter (what classification heads read). Where a row's head reads several layers, the last as
        many as any row needs, concatenated on the feature axis (the top one last; `classify.top_layers`).
        Decoders pad on the left, encoders on the right, as each was trained to be read."""
        inputs = build_inputs(self.model.get_input_embeddings(), token_rows, adapters,
                              left_pad=self.base_kind == "decoder", pad_id=self.tokenizer.pad_token_id)
        layers = max(head_layers_of(adapter) for adapter in adapters)
        with self.hooks.active(BatchPlan(adapters, reference)):
            output = self.body(**inputs.model_kwargs(), use_cache=False, output_hidden_states=layers > 1)
        hidden = last_layers(output.hidden_states, output.last_hidden_state, layers)
        return gather_text(hidden, inputs), inputs.text_mask

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


def normalizes(path: Path) -> bool:
    """Whether a sentence-transformers folder ends in a Normalize module (its embeddings are unit vectors)."""
    modules = path / "modules.json"
    try:
        return any(str(m.get("type", "")).endswith("Normalize") for m in json.loads(modules.read_text()))
    except (OSError, ValueError, AttributeError):
        return False


def max_token_chars(tokenizer) -> int:
    """The most characters one token can stand for (at least 1): a text longer than `limit` times this cannot
    fit in `limit` tokens, which is checked before tokenising it. Vocabulary strings are at least as long as the
    text they stand for (byte-level BPE spells each byte as one character); WordPiece's unknown token can stand for
    a whole word."""
    longest = max((len(token) for token in tokenizer.get_vocab()), default=1)
    if getattr(tokenizer, "unk_token", None):
        longest = max(longest, 100)  # WordPiece's max_input_chars_per_word
    return max(longest, 1)
