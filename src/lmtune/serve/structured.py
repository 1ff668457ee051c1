"""JSON output (OpenAI's `response_format`) by constrained decoding with xgrammar: at each step a JSON row's logits
keep only the tokens its grammar allows next, so the text parses (and follows the schema) whenever the row ends by
itself; a row cut by max_tokens ends with finish_reason `length`, as OpenAI's does.

xgrammar, not llguidance, outlines-core or lm-format-enforcer: it had the lowest per-token cost (mask + advance) and
the fastest schema compile on this CPU with SmolLM2's 49k-token vocabulary (benchmarks/json_decoding.py,
benchmarks/RESULTS.md), and it is what vLLM and SGLang use. It is imported only when a request asks for JSON.

Each row has its own matcher, so a JSON row and a free-text row share a batch; grammars are compiled once per
schema (xgrammar's compiler caches them) on the request's thread, never on the scheduler's.
"""

from __future__ import annotations

import json
import threading

import torch

from lmtune.errors import LmtuneError


class JsonGrammars:
    """Compiles `response_format`s for one tokenizer; the tokenizer's tables are built on first use."""

    def __init__(self, tokenizer, vocab_size: int, end_ids: list[int]):
        self.tokenizer, self.vocab_size, self.end_ids = tokenizer, vocab_size, end_ids
        self._compiler = None
        self._lock = threading.Lock()

    def _xgrammar(self):
        try:
            import xgrammar
        except ImportError as err:
            raise LmtuneError("response_format json_object / json_schema needs xgrammar: pip install 'lmtune[serve]'") from err
        with self._lock:
            if self._compiler is None:
                info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size,
                                                               stop_token_ids=list(self.end_ids))
                self._compiler = xgrammar.GrammarCompiler(info, max_threads=1)
        return xgrammar

    def compile(self, kind: str, schema: dict | None):
        """The compiled grammar for `json_object` (any object) or `json_schema` (that schema)."""
        self._xgrammar()
        try:
            source = json.dumps(schema if kind == "json_schema" else {"type": "object"})
            return self._compiler.compile_json_schema(source, any_whitespace=False)
        except Exception as err:  # noqa: BLE001 - xgrammar raises RuntimeError/ValueError for schemas it refuses
            raise LmtuneError(f"response_format: the JSON schema cannot be used: {err}") from None

    def row(self, compiled) -> RowGrammar:
        return RowGrammar(self._xgrammar(), compiled, self.vocab_size)


class RowGrammar:
    """One row's place in its grammar: masks its logits, then advances with the chosen token."""

    def __init__(self, xgrammar, compiled, vocab_size: int):
        self.xgrammar = xgrammar
        self.matcher = xgrammar.GrammarMatcher(compiled)
        self.bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """A copy of one row's logits [vocab] with every token the grammar forbids at -inf."""
        masked = logits.float().clone()[None]
        self.matcher.fill_next_token_bitmask(self.bitmask)
        self.xgrammar.apply_token_bitmask_inplace(masked, self.bitmask.to(masked.device))
        return masked[0]

    def accept(self, token: int) -> None:
        if not self.matcher.accept_token(token):
            raise LmtuneError(f"token {token} does not continue the JSON grammar (a masked token was chosen)")
