"""Answer extraction for generative evaluation, after the LLM-Adapters paper.

A generative model answers in free text; to score it we pull the answer out and compare it with the gold one.
The paper's rules: arithmetic sets take the LAST number of the generation and allow an absolute error of 1e-3;
commonsense sets take the FIRST answer keyword (answer1, true, option2, ...); multiple choice takes a letter.

Number rules: a comma is a thousands separator only before exactly three digits ("1, 2 and 3" is three
numbers); "-" is a sign only when no letter, digit or closing bracket stands right before it, so "5-3" reads
as 5 and 3 (a range or a subtraction, never -3); "3/4" is 0.75; "$" and "%" are dropped ("12%" -> 12.0);
"\\frac{3}{4}" reads as 3/4, and the last "\\boxed{...}" holding a number wins over numbers after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

AnswerType = Literal["number", "letter", "keyword", "text"]

_NUMBER = re.compile(
    r"(?:(?<![\w)\]}])(?P<sign>-))?\$?"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:/(?P<den>0*[1-9]\d*))?%?"
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_FRAC = re.compile(r"\\d?frac\{(\d+)\}\{(\d+)\}")

# numbered families accept one optional space ("answer 3") and stop before a further digit ("answer12" is none)
_FAMILIES = {
    "true/false": r"\b(true|false)\b",
    "answer": r"\b(answer) ?([1-5])(?!\d)",
    "option": r"\b(option) ?([12])(?!\d)",
    "ending": r"\b(ending) ?([1-4])(?!\d)",
    "solution": r"\b(solution) ?([12])(?!\d)",
}


def _value(match: re.Match[str]) -> float:
    """The float a _NUMBER match stands for, with its sign, thousands commas and fraction applied."""
    value = float(match["num"].replace(",", ""))
    if match["den"]:
        value /= float(match["den"])
    return -value if match["sign"] else value


def parse_number(text: str) -> float | None:
    """A gold answer or bare number string as a float; None unless the whole string is one number, so that
    infer_answer_type does not call "nan" or "7 apples" numeric."""
    match = _NUMBER.fullmatch(text.strip().rstrip("."))
    return _value(match) if match else None


def extract_number(text: str) -> float | None:
    """The last number of a generation (the paper's rule: the reasoning comes first, the result last)."""
    text = _FRAC.sub(r"\1/\2", text)
    for boxed in reversed(_BOXED.findall(text)):
        matches = list(_NUMBER.finditer(boxed))
        if matches:
            return _value(matches[-1])
    matches = list(_NUMBER.finditer(text))
    return _value(matches[-1]) if matches else None


def _is_article_or_prefix(text: str, match: re.Match[str]) -> bool:
    """Whether a standalone "A" is the article opening a sentence ("A train leaves") or the "A:" response
    prefix the paper's training outputs start with, rather than a chosen option."""
    if match.group() != "A":
        return False
    before = text[: match.start()].rstrip(" \t")
    line_start = before == "" or before.endswith("\n")
    after = text[match.end() :]
    if line_start and after.startswith(":"):
        return True
    sentence_start = line_start or before.endswith((".", "!", "?", ":"))
    return sentence_start and re.match(r"\s+[a-z]", after) is not None


def extract_letter(text: str, letters: str = "ABCDE") -> str | None:
    """The chosen option letter. Explicit forms beat loose ones: "answer is D", "Answer: (D)", "option D" first
    (a model that restates the option list "(A) 5 (B) 6" still concludes with its choice), then "(D)"/"D)" (the
    last of either), then the first standalone capital that is not an article or "A:" prefix (the paper takes
    the first letter)."""
    options = "[" + re.escape(letters.upper()) + "]"
    explicit = (
        rf"(?i:answer|option|choice)(?:\s+(?i:is))?\s*:?\s*\(?({options})(?![A-Za-z0-9])",
        rf"(?<![A-Za-z0-9])\(?({options})\)",
    )
    for pattern in explicit:
        found = re.findall(pattern, text)
        if found:
            return found[-1]
    for match in re.finditer(rf"(?<![A-Za-z0-9]){options}(?![A-Za-z0-9])", text):
        if not _is_article_or_prefix(text, match):
            return match.group()
    return None


def _family_pattern(family: str) -> str:
    """The regex of a keyword family; an unknown family is a caller's bug, so it raises."""
    if family not in _FAMILIES:
        raise ValueError(f"unknown keyword family {family!r}; expected one of {sorted(_FAMILIES)}")
    return _FAMILIES[family]


def extract_keyword(text: str, family: str) -> str | None:
    """The first keyword of `family` in the generation, lower-case ("Answer 3." -> "answer3"), as the paper
    scores commonsense sets."""
    match = re.search(_family_pattern(family), text, re.IGNORECASE)
    return "".join(match.groups()).lower() if match else None


def keyword_family(gold: str) -> str | None:
    """The keyword family a gold answer belongs to ("answer3" -> "answer", "false" -> "true/false"), or None."""
    for family, pattern in _FAMILIES.items():
        if re.fullmatch(pattern, gold.strip(), re.IGNORECASE):
            return family
    return None


def infer_answer_type(golds: Iterable[str]) -> AnswerType:
    """How a dataset answers, judged from all its gold answers so one odd row cannot change the scoring."""
    golds = [gold.strip() for gold in golds]
    if not golds:
        return "text"
    families = {keyword_family(gold) for gold in golds}
    if len(families) == 1 and None not in families:
        return "keyword"
    if all(len(gold) == 1 and gold in "ABCDE" for gold in golds):
        return "letter"
    if all(parse_number(gold) is not None for gold in golds):
        return "number"
    return "text"


def _normalise_text(text: str) -> str:
    """Lower-case, whitespace collapsed, trailing punctuation dropped: surface noise that is not an error."""
    return " ".join(text.split()).lower().rstrip(".,;:!? ")


def _format_number(value: float) -> str:
    """A float as a short string that float() reads back: 1234.0 -> "1234", 0.75 -> "0.75"."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def extract_answer(text: str, answer_type: AnswerType, family: str | None = None) -> str | None:
    """The answer of a generation as a string, by answer type; None when it holds no answer."""
    if answer_type == "number":
        value = extract_number(text)
        return None if value is None else _format_number(value)
    if answer_type == "letter":
        return extract_letter(text)
    if answer_type == "keyword":
        if family is None:
            raise ValueError("keyword answers need a family; get it from the gold answers with keyword_family")
        return extract_keyword(text, family)
    if answer_type == "text":
        return _normalise_text(text) or None
    raise ValueError(f"unknown answer type {answer_type!r}")


def _as_float(prediction: str) -> float | None:
    """A prediction as a float: our own normalised strings (float() reads "1e+20"), else a raw number string."""
    try:
        return float(prediction)
    except ValueError:
        return parse_number(prediction)


def is_correct(prediction: str | None, gold: str, answer_type: AnswerType, tolerance: float = 1e-3) -> bool:
    """Whether an extracted answer matches the gold one; numbers within `tolerance` (the paper's 1e-3)."""
    if prediction is None:
        return False
    if answer_type == "number":
        predicted, expected = _as_float(prediction), parse_number(gold)
        return predicted is not None and expected is not None and abs(predicted - expected) <= tolerance
    if answer_type in ("letter", "keyword"):
        return prediction.strip().lower() == gold.strip().lower()
    return _normalise_text(prediction) == _normalise_text(gold)
