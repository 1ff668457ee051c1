"""Read tables from local files (jsonl, json, csv, tsv) or the hub into `datasets.Dataset`s."""

from __future__ import annotations

import codecs
import csv
from pathlib import Path

import datasets

from lmtune.config.schema import DataConfig
from lmtune.errors import LmtuneError

FORMAT_BY_SUFFIX = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".txt": "tsv"}


def file_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    fmt = FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise LmtuneError(f"cannot tell the format of {path} from its extension; set data.format (jsonl, json, csv, tsv)")
    return fmt


def read_file(path_text: str, declared_format: str = "auto") -> datasets.Dataset:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise LmtuneError(f"data file {path} does not exist; check data.train/validation/test (paths are relative to where you run lmtune)")
    if path.stat().st_size == 0:
        raise LmtuneError(f"data file {path} is empty; it needs a header (csv/tsv) or one JSON object per row")
    fmt = file_format(path, declared_format)
    check_utf8_text(path)
    bars = datasets.is_progress_bar_enabled()  # off a terminal lmtune turns them off for good: keep it so
    datasets.disable_progress_bars()
    try:
        if fmt in ("jsonl", "json"):
            table = datasets.load_dataset("json", data_files=str(path), split="train")
        elif fmt == "csv":
            table = datasets.load_dataset("csv", data_files=str(path), split="train")
        else:
            # TSV files (GLUE's among them) do not quote fields: a lone " is text, not a quote.
            table = datasets.load_dataset(
                "csv", data_files=str(path), split="train", sep="\t", quoting=csv.QUOTE_NONE, encoding="utf-8-sig"
            )
    except Exception as err:  # noqa: BLE001 - parse errors come in many types; the fix is the same
        if "corresponds to no data" in str(err):  # datasets' words for a header without rows
            raise LmtuneError(f"data file {path} has no rows; add labelled examples") from None
        raise LmtuneError(f"cannot read {path} as {fmt}: {err}") from None
    finally:
        if bars:
            datasets.enable_progress_bars()
    return table


def check_utf8_text(path: Path, chunk_bytes: int = 1 << 20) -> None:
    """Refuse a binary or non-UTF-8 file with where and how to fix it (datasets says only "An error occurred while
    generating the dataset"). Streams the file: memory stays flat whatever its size."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    lines, offset = 1, 0
    with open(path, "rb") as handle:
        if handle.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):  # what Windows tools save as "Unicode"
            raise LmtuneError(f"data file {path} is UTF-16, not UTF-8; re-encode it, e.g. `iconv -f utf-16 -t utf-8 "
                              f"{path} > {path.stem}.utf8{path.suffix}`")
        handle.seek(0)
        while chunk := handle.read(chunk_bytes):
            if b"\0" in chunk:
                at = offset + chunk.index(b"\0")
                raise LmtuneError(f"data file {path} looks binary (a NUL byte at byte {at}), not jsonl/json/csv/tsv "
                                  "text; give the data as a UTF-8 text file")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                line = lines + chunk[: err.start].count(b"\n")
                raise LmtuneError(
                    f"data file {path} is not UTF-8: byte 0x{chunk[err.start]:02x} on line {line} is not valid UTF-8 "
                    f"(latin-1 or another encoding?); re-encode it, e.g. `iconv -f latin1 -t utf-8 {path} > "
                    f"{path.stem}.utf8{path.suffix}`") from None
            lines += chunk.count(b"\n")
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise LmtuneError(f"data file {path} is not UTF-8: it ends in the middle of a character (truncated?); "
                          "re-encode or re-export it as UTF-8") from None


def read_split(cfg: DataConfig, which: str) -> datasets.Dataset | None:
    """The table for `which` (train/validation/test): a file, or a hub split when `data.hub` is set."""
    source = getattr(cfg, which)
    if source is None:
        return None
    if cfg.hub:
        try:
            return datasets.load_dataset(cfg.hub, cfg.hub_subset, split=source)
        except Exception as err:  # noqa: BLE001
            raise LmtuneError(f"cannot load hub dataset {cfg.hub}/{cfg.hub_subset} split {source!r}: {err}") from None
    return read_file(source, cfg.format)
