"""Multiple-choice records in the layouts people have them, as one shape: per choice, the text the model reads
(`contexts[i]`) and the text whose log-likelihood is scored after it (`continuations[i]`), plus the gold index.

Most sets score different continuations after one question. WinoGrande is the exception and is scored the way
lm-evaluation-harness scores it ("partial evaluation"): each option fills the blank, so the contexts differ, and
the shared rest of the sentence is the continuation.

Layouts (`task.layout`): `columns` (a question, a list of choices and an answer as index, letter or text; names
configurable), `llm_adapters` (the LLM-Adapters commonsense files: options listed in the instruction as
`Answer1: ...`, `Option1:`, `Solution1:`, `Ending1:`, or true/false for BoolQ), and the hub layouts `arc`
(`question`, `choices.text/label`, `answerKey`), `hellaswag` (`ctx`, `endings`, `label`), `piqa` (`goal`,
`sol1/sol2`, `label`), `winogrande` (`sentence` with `_`, `option1/2`, `answer`). `auto` reads the columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from lmtune.errors import LmtuneError

Layout = Literal["auto", "columns", "llm_adapters", "arc", "hellaswag", "piqa", "winogrande"]
LETTERS = "ABCDEFGHIJ"
# The option families the LLM-Adapters instructions use; the gold answer is `<family><n>` (answer1, option2, ...).
OPTION = re.compile(r"\b(Answer|Option|Solution|Ending)(\d+):\s*", re.IGNORECASE)
FORMAT_LINE = re.compile(r"\s*Answer format:.*$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class ChoiceItem:
    question: str
    """The question as a person reads it (for predictions and templates)."""
    choices: list[str]
    """The choices as a person reads them."""
    contexts: list[str]
    """Per choice, what the model reads before the scored text: the question (the template is applied later), or
    for a blank-filling sentence the sentence up to the blank with that option filled in."""
    continuations: list[str]
    """Per choice, the text whose log-likelihood is scored."""
    gold: int | None
    """Index of the correct choice (None for rows without an answer: prediction only)."""
    fills_blank: bool = False
    """WinoGrande style: the contexts already hold the choice; the template must not add "Answer:"."""


@dataclass(frozen=True)
class Columns:
    """Column names of the `columns` layout (task.question_column, ...)."""

    question: str = "question"
    choices: str = "choices"
    answer: str = "answer"


def detect_layout(columns: list[str]) -> Layout:
    have = set(columns)
    if {"sentence", "option1", "option2"} <= have:
        return "winogrande"
    if {"goal", "sol1", "sol2"} <= have:
        return "piqa"
    if {"ctx", "endings"} <= have:
        return "hellaswag"
    if {"question", "choices", "answerKey"} <= have:
        return "arc"
    if "instruction" in have:
        return "llm_adapters"
    return "columns"


def choice_items(rows: list[dict[str, Any]], layout: Layout, columns: Columns = Columns()) -> list[ChoiceItem]:
    """Every row in the one shape; a row that does not fit says which row and what is missing."""
    if rows and layout == "auto":
        layout = detect_layout(list(rows[0]))
    read = {"columns": lambda r: _from_columns(r, columns), "llm_adapters": _from_llm_adapters, "arc": _from_arc,
            "hellaswag": _from_hellaswag, "piqa": _from_piqa, "winogrande": _from_winogrande}[layout]
    items = []
    for number, row in enumerate(rows):
        try:
            item = read(row)
        except (KeyError, ValueError, TypeError, IndexError) as err:
            raise LmtuneError(f"row {number} does not fit the {layout} multiple-choice layout: {err}") from None
        if len(item.continuations) < 2:
            raise LmtuneError(f"row {number} has {len(item.continuations)} choice(s); multiple choice needs two or more")
        items.append(item)
    return items


def _answer_index(answer: Any, choices: list[str], labels: list[str] | None = None) -> int | None:
    """An answer given as an index, a letter, a label of `labels`, or the choice's own text."""
    if answer is None or answer == "":
        return None
    if isinstance(answer, bool):
        raise ValueError(f"answer {answer!r} is not an index, letter or choice")
    if isinstance(answer, int) or (isinstance(answer, str) and answer.strip().isdigit() and labels is None):
        index = int(answer)
    elif labels is not None and str(answer) in labels:
        index = labels.index(str(answer))
    elif isinstance(answer, str) and answer.strip() in choices:
        index = choices.index(answer.strip())
    elif isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in LETTERS:
        index = LETTERS.index(answer.strip().upper())
    else:
        raise ValueError(f"answer {answer!r} is not an index, a letter or one of the choices")
    if not 0 <= index < len(choices):
        raise ValueError(f"answer {answer!r} points past the {len(choices)} choices")
    return index


def _item(question: str, choices: list[str], gold: int | None) -> ChoiceItem:
    # The continuation starts with a space: "Answer:" + " Paris", as the harness's target delimiter has it.
    return ChoiceItem(question, [c.strip() for c in choices], [question] * len(choices), [" " + c.strip() for c in choices],
                      gold)


def _from_columns(row: dict, columns: Columns) -> ChoiceItem:
    choices = row[columns.choices]
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"column {columns.choices!r} must hold a list of strings, not {type(choices).__name__}")
    return _item(str(row[columns.question]), choices, _answer_index(row.get(columns.answer), choices))


def _from_arc(row: dict) -> ChoiceItem:
    texts, labels = list(row["choices"]["text"]), [str(x) for x in row["choices"]["label"]]
    return _item(row["question"], texts, _answer_index(row.get("answerKey"), texts, labels))


def _from_hellaswag(row: dict) -> ChoiceItem:
    context = row["ctx"] if "ctx_a" not in row else f"{row['ctx_a']} {str(row.get('ctx_b', '')).capitalize()}".strip()
    question = f"{row['activity_label']}: {context}" if row.get("activity_label") else context
    endings = [_clean_hellaswag(e) for e in row["endings"]]
    label = row.get("label")
    return _item(_clean_hellaswag(question), endings, None if label in (None, "") else _answer_index(int(label), endings))


def _clean_hellaswag(text: str) -> str:
    # The harness's preprocessing: WikiHow's bracketed artefacts out, double spaces closed.
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ").strip()


def _from_piqa(row: dict) -> ChoiceItem:
    choices = [row["sol1"], row["sol2"]]
    label = row.get("label")
    return _item(row["goal"], choices, None if label in (None, "", -1) else _answer_index(int(label), choices))


def _from_winogrande(row: dict) -> ChoiceItem:
    options = [row["option1"], row["option2"]]
    answer = row.get("answer")
    return _blank_item(row["sentence"], options, None if answer in (None, "") else int(answer) - 1)


def _blank_item(sentence: str, options: list[str], gold: int | None) -> ChoiceItem:
    if sentence.count("_") != 1:
        raise ValueError(f"the sentence must have one blank `_`: {sentence!r}")
    before, after = sentence.split("_")
    # The option fills the blank; the rest of the sentence, the same for every option, is what gets scored.
    return ChoiceItem(sentence, list(options), [before + option for option in options],
                      [" " + after.strip()] * len(options), gold, fills_blank=True)


def _from_llm_adapters(row: dict) -> ChoiceItem:
    text = FORMAT_LINE.sub("", str(row["instruction"])).strip()
    answer = str(row.get("answer", "")).strip().lower()
    found = list(OPTION.finditer(text))
    if not found:
        if answer in ("true", "false") or "true or false" in text.lower():  # BoolQ: a yes/no question
            question = _strip_boilerplate(text)
            return _item(question, ["no", "yes"], None if not answer else int(answer == "true"))
        raise ValueError("the instruction lists no options (Answer1:, Option1:, Solution1:, Ending1:)")
    question = _strip_boilerplate(text[: found[0].start()].strip())
    ends = [m.start() for m in found[1:]] + [len(text)]
    choices = [text[m.end():end].strip() for m, end in zip(found, ends)]
    family = found[0].group(1).lower()
    gold = None
    if answer:
        match = re.fullmatch(rf"{family}(\d+)", answer)
        if match is None:
            raise ValueError(f"answer {answer!r} is not one of {family}1..{family}{len(choices)}")
        gold = _answer_index(int(match.group(1)) - 1, choices)
    if family == "option" and question.count("_") == 1:  # WinoGrande: fill the blank
        return _blank_item(question, choices, gold)
    return _item(question, choices, gold)


def _strip_boilerplate(text: str) -> str:
    """'Please choose the correct answer to the question: X' → 'X' (and the BoolQ and blank-filling forms)."""
    match = re.match(r"please (?:choose|answer)[^:]*?(?:question|sentence)\s*:\s*", text, re.IGNORECASE)
    return text[match.end():].strip() if match else text.strip()
