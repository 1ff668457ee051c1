"""Instruction tuning (the LLM-Adapters setting): learn responses to instructions; score math and commonsense
answers by extracting them from the generated text."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from lmtune.data.sources import read_split
from lmtune.data.templates import Example, record_format, to_example
from lmtune.errors import LmtuneError
from lmtune.evaluate.extraction import extract_answer, infer_answer_type, is_correct, keyword_family
from lmtune.tasks.base import register_task
from lmtune.tasks.generative import GenerativeTask, GenerativeTaskConfig


class InstructionConfig(GenerativeTaskConfig):
    name: Literal["instruction"] = "instruction"
    """Records {instruction, input, output, answer} (LLM-Adapters), {question, answer} (GSM8K) or {messages} (chat)."""
    answer_type: Literal["auto", "number", "letter", "keyword", "text"] = "auto"
    """How answers are pulled from generations: `number` (the last number, math), `letter` (A–E, multiple choice),
    `keyword` (true/false, answer1..5, option1..2, ending1..4, solution1..2: commonsense), `text` (normalised exact
    match); `auto` reads it from each evaluated set's gold answers."""
    tolerance: float = Field(1e-3, ge=0)
    """Numbers within this distance of the gold answer count as correct (the paper's 1e-3)."""


@register_task
class InstructionTask(GenerativeTask):
    name = "instruction"
    config_cls = InstructionConfig
    summary = "generate a response to an instruction; math/commonsense answers are extracted and scored"

    def read_split(self, which: str):
        return read_split(self.cfg.data, which)

    def examples(self, table) -> list[Example]:
        fmt = record_format(table.column_names)
        try:
            return [to_example(row, fmt) for row in table]
        except KeyError as err:
            raise LmtuneError(f"a {fmt} record lacks the field {err}") from None

    def answer_type(self, examples: list[Example]) -> str:
        configured = self.cfg.task.answer_type
        return infer_answer_type(e.gold for e in examples) if configured == "auto" else configured

    def score(self, examples: list[Example], generations: list[str]) -> dict[str, Any]:
        answer_type = self.answer_type(examples)
        predictions, correct = [], 0
        for example, generation in zip(examples, generations):
            extracted = self._extract(generation, answer_type, example.gold)
            right = is_correct(extracted, example.gold, answer_type, self.cfg.task.tolerance)
            correct += right
            predictions.append({
                "instruction": example.instruction, "input": example.input, "generation": generation,
                "extracted": extracted, "gold": example.gold, "correct": right,
            })
        return {
            "accuracy": correct / max(len(examples), 1),
            "correct": correct,
            "no_answer": sum(p["extracted"] is None for p in predictions),
            "answer_type": answer_type,
            "predictions": predictions,
        }

    def _extract(self, generation: str, answer_type: str, gold: str) -> str | None:
        family = keyword_family(gold) if answer_type == "keyword" else None
        return extract_answer(generation, answer_type, family)

    def row_from_text(self, text: str, pair: str | None = None) -> dict:
        return {"instruction": text, "input": pair or ""}

    def prediction(self, example: Example, generation: str) -> dict[str, Any]:
        answer_type = self.cfg.task.answer_type
        if answer_type == "auto" or (answer_type == "keyword" and keyword_family(example.gold) is None):
            return {"generation": generation}
        return {"generation": generation, "answer": self._extract(generation, answer_type, example.gold)}
