"""Raw text corpora: plain text files, jsonl records with a text field, folders and globs; read as a stream of
pieces so a corpus larger than memory never has to fit in it.

A *piece* is a jsonl record or a chunk of about `chunk_chars` of a text file cut at a line end; `ends_document`
says whether a document ends with it (the packer puts an end-of-document token there). Files are decoded as UTF-8,
falling back to latin-1 (two Gutenberg books are latin-1), and CRLF/CR line ends become LF (Moby Dick has CRLF).
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lmtune.errors import LmtuneError
from lmtune.pretrain.config import CorpusConfig

TEXT_SUFFIXES = (".txt", ".tokens", ".text", ".raw")
RECORD_SUFFIXES = (".jsonl", ".json")
SKIPPED_IN_FOLDERS = ("readme", "sources", "license", "licence")
"""A folder's README/SOURCES/LICENSE files are about the corpus, not part of it (name them explicitly to read them)."""


@dataclass(frozen=True)
class Piece:
    text: str
    ends_document: bool


def resolve_files(sources: list[str]) -> list[Path]:
    """Files, folders (recursively: .txt/.tokens/.jsonl, no README/SOURCES) and globs → a sorted, de-duplicated file list."""
    files: list[Path] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES + RECORD_SUFFIXES
                           and not p.name.lower().startswith(SKIPPED_IN_FOLDERS))
            if not found:
                raise LmtuneError(f"folder {path} holds no text files ({', '.join(TEXT_SUFFIXES + RECORD_SUFFIXES)})")
            files.extend(found)
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matches:
                raise LmtuneError(f"corpus source {source!r} is neither a file, a folder nor a glob that matches files")
            files.extend(matches)
    seen: set[Path] = set()
    return [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]


def decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # every byte is a latin-1 character: never fails
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _text_pieces(path: Path, chunk_chars: int) -> Iterator[Piece]:
    """A text file in chunks cut at line ends. Lines are read as bytes, so one file may not mix encodings
    mid-way: the file's encoding is decided on its first chunk that is not UTF-8 (then latin-1 for the rest)."""
    latin1 = False
    buffer: list[str] = []
    size = 0
    with open(path, "rb") as handle:
        for raw in handle:
            if not latin1:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    latin1 = True
            if latin1:
                line = raw.decode("latin-1")
            if not buffer and size == 0 and line.startswith("\ufeff"):
                line = line[1:]
            line = line.replace("\r\n", "\n").replace("\r", "\n")
            buffer.append(line)
            size += len(line)
            if size >= chunk_chars:
                yield Piece("".join(buffer), False)
                buffer, size = [], 0
    yield Piece("".join(buffer), True)


def _record_pieces(path: Path, field: str) -> Iterator[Piece]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            line = decode(raw).strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise LmtuneError(f"{path}:{number} is not valid JSON ({err.msg}); jsonl corpora hold one record a line") from None
            if not isinstance(record, dict) or field not in record:
                keys = list(record) if isinstance(record, dict) else type(record).__name__
                raise LmtuneError(f"{path}:{number} has no field {field!r} (corpus.text_field); it has {keys}")
            yield Piece(str(record[field]), True)


def file_pieces(path: Path, cfg: CorpusConfig) -> Iterator[Piece]:
    if path.suffix.lower() in RECORD_SUFFIXES:
        yield from _record_pieces(path, cfg.text_field)
    else:
        yield from _text_pieces(path, cfg.chunk_chars)


def _held_out(index: int, fraction: float) -> bool:
    """Every n-th piece (n = round(1 / fraction)), counting from the n-th: deterministic, works on a stream."""
    if fraction <= 0:
        return False
    period = max(2, round(1 / fraction))
    return index % period == period - 1


def iter_pieces(cfg: CorpusConfig, split: str = "train") -> Iterator[Piece]:
    """The training or validation pieces of the corpus, lazily; `max_chars`/`max_validation_chars` cut them."""
    if split not in ("train", "validation"):
        raise ValueError(split)
    if not cfg.files:
        raise LmtuneError("no corpus: set corpus.files to text/jsonl files or folders (e.g. ../shared/data/gutenberg)")
    explicit = bool(cfg.validation)
    sources = cfg.validation if (split == "validation" and explicit) else cfg.files
    limit = cfg.max_chars if split == "train" else cfg.max_validation_chars
    used = 0
    index = 0
    for path in resolve_files(sources):
        for piece in file_pieces(path, cfg):
            keep = True
            if not explicit:
                keep = _held_out(index, cfg.validation_fraction) == (split == "validation")
            index += 1
            if not keep or not piece.text:
                continue
            if limit is not None and used + len(piece.text) >= limit:
                cut = piece.text[: limit - used]
                if cut:
                    yield Piece(cut, True)
                return
            used += len(piece.text)
            yield piece


def read_texts(cfg: CorpusConfig, split: str = "train") -> list[str]:
    """Whole pieces as strings (for tokenizer training and evaluation)."""
    return [piece.text for piece in iter_pieces(cfg, split)]


def count_words(text: str) -> int:
    return len(text.split())


def corpus_hash(cfg: CorpusConfig) -> str | None:
    """sha256 of the corpus files (training and held-out) for provenance.json; none for a stream, whose files
    may be larger than is worth reading twice."""
    from lmtune.io import sha256_files

    if cfg.streaming:
        return None
    return sha256_files(sorted(set(resolve_files(cfg.files) + resolve_files(cfg.validation))))
