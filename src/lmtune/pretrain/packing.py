"""Sequence packing: documents are tokenised, joined with an end-of-document token and cut into blocks of exactly
`seq_len` tokens, so no batch holds padding.

Every token of the corpus lands in exactly one block, in order; the only exception is the remainder — the last,
partial block — which is dropped (`remainder: drop`, its size is reported in `Packer.dropped`) or emitted short
(`remainder: pad`; the collator pads it and masks the padding out of the loss). Attention crosses document
boundaries inside a block, as in GPT-2's and Llama's pre-training; the end-of-document token tells the model where
one text stops.
"""

from __future__ import annotations

import random
from typing import Iterable, Iterator

import torch

from lmtune.pretrain.corpus import Piece


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids without special tokens, straight from the fast tokenizer (no too-long warning for whole books)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Some tokenizer.json files carry padding/truncation (MiniLM's pads and cuts at 128); transformers resets
        # both on every call of its own, so clearing them here changes nothing for other users of the tokenizer.
        if backend.truncation is not None:
            backend.no_truncation()
        if backend.padding is not None:
            backend.no_padding()
        return backend.encode(text, add_special_tokens=False).ids
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def document_separator(tokenizer) -> int | None:
    """The token that ends a document: EOS for decoders, [SEP] for encoders."""
    for name in ("eos_token_id", "sep_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return value
    return None


class Packer:
    """Turns (token ids, ends_document) pieces into blocks of `seq_len`; counts what it saw and dropped."""

    def __init__(self, seq_len: int, separator: int | None, remainder: str = "drop"):
        if remainder not in ("drop", "pad"):
            raise ValueError(f"remainder must be drop or pad, not {remainder!r}")
        self.seq_len, self.separator, self.remainder = seq_len, separator, remainder
        self.tokens_in = 0
        self.dropped = 0
        self.blocks = 0

    def pack(self, pieces: Iterable[tuple[list[int], bool]]) -> Iterator[list[int]]:
        buffer: list[int] = []
        for ids, ends_document in pieces:
            buffer.extend(ids)
            if ends_document and self.separator is not None:
                buffer.append(self.separator)
            self.tokens_in += len(ids) + (1 if ends_document and self.separator is not None else 0)
            start = 0
            while len(buffer) - start >= self.seq_len:
                self.blocks += 1
                yield buffer[start : start + self.seq_len]
                start += self.seq_len
            buffer = buffer[start:]
        if buffer and self.remainder == "pad":
            self.blocks += 1
            yield buffer
        else:
            self.dropped = len(buffer)

    def report(self) -> dict[str, int]:
        return {"tokens": self.tokens_in, "blocks": self.blocks, "seq_len": self.seq_len, "dropped_tokens": self.dropped}


def tokenized_pieces(pieces: Iterable[Piece], tokenizer) -> Iterator[tuple[list[int], bool]]:
    for piece in pieces:
        yield encode_text(tokenizer, piece.text), piece.ends_document


def pack_in_memory(pieces: Iterable[Piece], tokenizer, seq_len: int, remainder: str = "drop") -> tuple[list[list[int]], dict]:
    packer = Packer(seq_len, document_separator(tokenizer), remainder)
    blocks = list(packer.pack(tokenized_pieces(pieces, tokenizer)))
    return blocks, packer.report()


class BlockDataset(torch.utils.data.Dataset):
    """Packed blocks held in memory; the Trainer's sampler shuffles them (seeded)."""

    def __init__(self, blocks: list[list[int]]):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return {"input_ids": self.blocks[index]}


class StreamingBlocks(torch.utils.data.IterableDataset):
    """Reads, tokenises and packs the corpus on the fly; shuffles within a buffer of blocks. Each pass (epoch)
    re-reads the files, so memory holds one piece and the buffer, whatever the corpus size."""

    def __init__(self, make_pieces, tokenizer, seq_len: int, remainder: str, shuffle_buffer: int, seed: int):
        self.make_pieces, self.tokenizer = make_pieces, tokenizer
        self.seq_len, self.remainder, self.shuffle_buffer, self.seed = seq_len, remainder, shuffle_buffer, seed
        self.passes = 0

    def __iter__(self) -> Iterator[dict[str, list[int]]]:
        rng = random.Random(self.seed + self.passes)
        self.passes += 1
        packer = Packer(self.seq_len, document_separator(self.tokenizer), self.remainder)
        buffer: list[list[int]] = []
        for block in packer.pack(tokenized_pieces(self.make_pieces(), self.tokenizer)):
            if self.shuffle_buffer <= 1:
                yield {"input_ids": block}
                continue
            buffer.append(block)
            if len(buffer) >= self.shuffle_buffer:
                yield {"input_ids": buffer.pop(rng.randrange(len(buffer)))}
        rng.shuffle(buffer)
        for block in buffer:
            yield {"input_ids": block}


class CausalCollator:
    """Stacks blocks; labels are the inputs (the model shifts them); a short (remainder) block is padded and its
    padding masked out of the loss and the attention."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"], dtype=torch.long)
            mask[i, : len(row["input_ids"])] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def training_data(corpus, train, tokenizer) -> tuple[torch.utils.data.Dataset, dict]:
    """The packed training blocks (in memory, or streamed when `corpus.streaming`) and a packing report. Raises
    here, before any output folder changes, when the corpus gives no block."""
    from lmtune.errors import LmtuneError
    from lmtune.pretrain.corpus import iter_pieces

    seq_len, remainder = train.seq_len, train.remainder
    if corpus.streaming:
        def pieces():
            return iter_pieces(corpus, "train")

        # A probe of its own (buffer 0): iterating the real stream would advance its per-pass shuffle seed.
        if next(iter(StreamingBlocks(pieces, tokenizer, seq_len, remainder, 0, train.seed)), None) is None:
            raise LmtuneError(f"the corpus gave not one block of train.seq_len={seq_len} tokens")
        data = StreamingBlocks(pieces, tokenizer, seq_len, remainder, corpus.shuffle_buffer, train.seed)
        return data, {"streaming": True, "seq_len": seq_len}
    blocks, report = pack_in_memory(iter_pieces(corpus, "train"), tokenizer, seq_len, remainder)
    if not blocks:
        raise LmtuneError(f"the corpus gave {report['tokens']} tokens: not one block of train.seq_len={seq_len}")
    return BlockDataset(blocks), {"streaming": False, **report}
