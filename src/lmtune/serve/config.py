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
