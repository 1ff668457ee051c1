"""Translation: source → target with a causal LM (an instruction prompt) or an encoder-decoder model; BLEU, chrF
and TER from sacrebleu, reported with their signatures so scores can be compared across papers."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, Literal

import datasets
from pydantic import Field

from lmtune.config.schema import GenerationConfig
from lmtune.data.sources import read_split
from lmtune.data.templates import Example
from lmtune.errors import LmtuneError
from lmtune.tasks.base import register_task
from lmtune.tasks.generative import GenerativeTask, GenerativeTaskConfig

LANGUAGES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
    "nl": "Dutch", "cs": "Czech", "ru": "Russian", "zh": "Chinese", "ja": "Japanese", "ar": "Arabic",
}


class TranslationConfig(GenerativeTaskConfig):
    name: Literal["translation"] = "translation"
    """Source text → target text. Data: a table with source/target columns, or line-aligned text files
    `<prefix>.<source_lang>[.gz]` and `<prefix>.<target_lang>[.gz]` where data.train/validation/test give the prefix."""
    source_lang: str = "en"
    """Source language code (file suffix and prompt)."""
    target_lang: str = "de"
    """Target language code (file suffix and prompt)."""
    source_column: str = "source"
    """Column with the source text (tables only)."""
    target_column: str = "target"
    """Column with the reference translation (tables only)."""
    instruction: str = "Translate the following {source} text into {target}."
    """The instruction in the prompt; `{source}`/`{target}` become the language names."""
    generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(max_new_tokens=128))
    """Decoding at evaluation and prediction time."""


def read_parallel(prefix: str, source_lang: str, target_lang: str) -> datasets.Dataset | None:
    """Line-aligned text files (Multi30k, WMT, OPUS style); None when `prefix` names no such pair."""
    files = [_existing(f"{prefix}.{lang}") for lang in (source_lang, target_lang)]
    if not all(files):
        return None
    sides = [_lines(f) for f in files]
    if len(sides[0]) != len(sides[1]):
        raise LmtuneError(f"{files[0]} has {len(sides[0])} lines but {files[1]} has {len(sides[1])}; they must be line-aligned")
    return datasets.Dataset.from_dict({"source": sides[0], "target": sides[1]})


def _existing(stem: str) -> Path | None:
    for candidate in (Path(stem), Path(stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\r\n") for line in handle]


@register_task
class TranslationTask(GenerativeTask):
    name = "translation"
    config_cls = TranslationConfig
    summary = "translate source text to target text; BLEU, chrF and TER (sacrebleu)"
    headline_metric = "bleu"

    def read_split(self, which: str):
        prefix = getattr(self.cfg.data, which)
        if prefix is None:
            return None
        task = self.cfg.task
        parallel = read_parallel(prefix, task.source_lang, task.target_lang)
        if parallel is not None:
            return parallel
        if not Path(prefix).is_file():
            raise LmtuneError(
                f"data.{which}={prefix}: neither a file nor the prefix of {prefix}.{task.source_lang}[.gz] and "
                f"{prefix}.{task.target_lang}[.gz]"
            )
        table = read_split(self.cfg.data, which)
        columns = {task.source_column: "source", task.target_column: "target"}
        if not set(columns) <= set(table.column_names):
            raise LmtuneError(
                f"{which} data needs columns {task.source_column!r} and {task.target_column!r} (task.source_column, "
                f"task.target_column); its columns are {table.column_names}"
            )
        return table.rename_columns({k: v for k, v in columns.items() if k != v})

    def examples(self, table) -> list[Example]:
        task = self.cfg.task
        names = {"source": LANGUAGES.get(task.source_lang, task.source_lang),
                 "target": LANGUAGES.get(task.target_lang, task.target_lang)}
        instruction = task.instruction.format(**names)
        column = "source" if "source" in table.column_names else task.source_column  # raw rows from `predict`
        if column not in table.column_names:
            raise LmtuneError(f"translation rows need a {column!r} field; got {table.column_names}")
        targets = table["target"] if "target" in table.column_names else [""] * len(table)
        return [Example(instruction, str(s).strip(), str(t).strip(), str(t).strip()) for s, t in zip(table[column], targets)]

    def score(self, examples: list[Example], generations: list[str]) -> dict[str, Any]:
        from sacrebleu.metrics import BLEU, CHRF, TER

        references = [[e.gold for e in examples]]
        result: dict[str, Any] = {}
        for name, metric in (("bleu", BLEU()), ("chrf", CHRF()), ("ter", TER())):
            result[name] = float(metric.corpus_score(generations, references).score)
            result[f"{name}_signature"] = str(metric.get_signature())
        result["predictions"] = [
            {"source": e.input, "reference": e.gold, "translation": g} for e, g in zip(examples, generations)
        ]
        return result

    def row_from_text(self, text: str, pair: str | None = None) -> dict:
        return {"source": text}

    def prediction(self, example: Example, generation: str) -> dict[str, Any]:
        return {"translation": generation}
