"""The serving engine's settings: light to import (pydantic only), so `lmtune serve --help` builds its options from
them without loading torch (serve/cli.py: one command-line option per field)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmtune.config.schema import StrictModel


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
    """Where the base model runs: auto (the GPU when there is one), cpu, cuda, cuda:1, ..."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """The base's dtype: auto is bfloat16 on a GPU that supports it, float32 on the CPU. Adapters keep the dtype
    they were saved in (float32 from any lmtune run) and compute in it; their outputs are cast to the base's."""
    max_classify_inputs: int = Field(256, gt=0)
    """Texts one classification request may send; they are classified max_batch_size at a time, between
    generation steps."""
    max_logprobs: int = Field(20, ge=0)
    """The most alternatives per token a request may ask for (`logprobs`, `top_logprobs`), as vLLM's default."""
    max_rows_per_request: int = Field(16, gt=0)
    """The most rows one request may generate (`best_of`, or `n` times the prompts): at most max_batch_size."""
    max_scored_prompt_tokens: int = Field(4096, gt=0)
    """Prompt tokens whose logits one prefill keeps for echo + logprobs (each is a vocabulary-wide row of
    floats); more wait for the next step (a single longer prompt still goes alone)."""


class ReplicaOptions(StrictModel):
    """How `lmtune serve` scales out on one machine (serve/cluster.py): one command-line option per field."""

    replicas: int = Field(1, gt=0)
    """Engines to run: 1 is the embedded single-process server (no Ray); more run as Ray Serve replicas behind Ray's
    HTTP proxy, each adapter routed to the replicas that already hold it."""
    adapters_per_replica: int = Field(64, gt=0)
    """Adapters Ray's router remembers per replica for routing (serve.multiplexed's max_num_models_per_replica);
    what a replica keeps in memory is still --memory-budget-mb's."""
    cpus_per_replica: float = Field(1, gt=0)
    """Ray CPUs each replica reserves; its torch threads default to this (Ray sets OMP_NUM_THREADS)."""
    gpus_per_replica: float = Field(0, ge=0)
    """Ray GPUs each replica reserves (0.5: two replicas share one GPU)."""


class ClusterConfig(ReplicaOptions):
    """One Ray Serve application of `lmtune serve`: what `--replicas N` builds, and the `args` of
    `serve run lmtune.serve.cluster:app_builder` on a cluster (docs/serve.md)."""

    replicas: int = Field(2, gt=0)
    """Engine replicas (each loads the base model once)."""
    base: str = "smollm2"
    """The base model: a bundled name, a folder every node can read, or a hub name (online)."""
    adapters: str | None = None
    """The adapter root, a folder every node can read (shared storage): each replica serves every adapter under it."""
    engine: EngineConfig = EngineConfig()
    """Each replica's engine settings."""
    threads: int | None = Field(None, gt=0)
    """torch CPU threads per replica (default: cpus_per_replica)."""
    api_keys: list[str] = []
    """Keys for `Authorization: Bearer`, checked by the router before the body is read; also $LMTUNE_API_KEYS
    where the router runs."""
    max_body_mb: float = Field(8, gt=0)
    """Largest request body in MB (413 above it)."""
