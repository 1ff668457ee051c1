"""Incremental detokenisation: the text each new token adds, at a constant cost per token.

Decoding the whole generation again after every token costs O(length) per token (quadratic over a reply). As in
vLLM and Hugging Face's TGI, only a short window is decoded instead: `prefix_offset..read_offset` are tokens whose
text was announced already (the context that makes the decoder spell the next token right: a SentencePiece word
boundary, a WordLevel space), `read_offset..` the tokens not yet announced. Their text is the window's decode minus
the prefix's decode. While that text ends in "\ufffd" the last token stopped inside a multi-byte UTF-8 character
(byte-level BPE splits emoji and CJK characters over several tokens): nothing is announced until a later token
completes it, so announced text is never taken back.

The slow reference, `tokenizer.decode(all_ids)` after every token, lives in tests/test_serve_detokenize.py with
the test that both give the same text.
"""

from __future__ import annotations

INCOMPLETE = "\ufffd"
"""What a decoder writes for bytes that are not (yet) a whole UTF-8 character."""

MAX_PENDING_TOKENS = 16
"""Unannounced tokens at most. A character is at most 4 bytes, so a longer run that still ends in "\ufffd" (bytes
that will never make a character, or tokens that decode to nothing, such as skipped special tokens) is announced
as it is, which keeps every decode call short whatever a model generates."""


class IncrementalDecoder:
    """Feed it token ids one at a time (`add`); it returns the text they complete."""

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer, self.skip_special_tokens = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.pending = ""
        """The text of the tokens not announced yet (ends in "\ufffd" while a character is incomplete)."""

    def add(self, token: int) -> str:
        """Record `token`; return the text it completes ("" while a character is unfinished)."""
        self.ids.append(token)
        prefix_text = self._decode(self.prefix_offset, self.read_offset)
        window_text = self._decode(self.prefix_offset, len(self.ids))
        new_text = window_text[len(prefix_text) :]
        waiting = len(self.ids) - self.read_offset
        if (not new_text or new_text.endswith(INCOMPLETE)) and waiting < MAX_PENDING_TOKENS:
            self.pending = new_text
            return ""
        self.prefix_offset, self.read_offset, self.pending = self.read_offset, len(self.ids), ""
        return new_text

    def _decode(self, start: int, end: int) -> str:
        if start == end:
            return ""
        return self.tokenizer.decode(self.ids[start:end], skip_special_tokens=self.skip_special_tokens)
