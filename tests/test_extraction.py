"""Answer extraction for generative evaluation: each rule checked on generations like the paper's."""

import pytest

from lmtune.evaluate.extraction import (
    extract_answer,
    extract_keyword,
    extract_letter,
    extract_number,
    infer_answer_type,
    is_correct,
    keyword_family,
    parse_number,
)


def _cases(table):
    """(id, *values) rows -> pytest.param with readable ids."""
    return [pytest.param(*values, id=case_id) for case_id, *values in table]


NUMBER_CASES = [
    ("thousands-comma-then-period", "The answer is 1,234.", 1234.0),
    ("negative", "-7", -7.0),
    ("negative-in-sentence", "The temperature is now -7 degrees", -7.0),
    ("hyphen-between-digits-is-no-sign", "pages 5-3", 3.0),
    ("fraction", "3/4", 0.75),
    ("answer-is", "The answer is 72", 72.0),
    ("last-number-wins", "He has 5 apples and gives 2, so 3 remain.", 3.0),
    ("comma-list-is-three-numbers", "1, 2 and 3", 3.0),
    ("comma-before-four-digits-is-no-separator", "1,2345", 2345.0),
    ("currency-with-cents", "$1,234.50", 1234.5),
    ("no-number", "no number here", None),
    ("boxed", "\\boxed{42}", 42.0),
    ("boxed-beats-later-numbers", "So \\boxed{42} (see step 3)", 42.0),
    ("latex-frac", "x = \\frac{3}{4}", 0.75),
    ("leading-dot-decimal", ".5", 0.5),
    ("decimal", "half is 0.5", 0.5),
    ("percent", "It grew by 12%", 12.0),
    ("millions", "Total: 1,234,567 dollars", 1234567.0),
]


@pytest.mark.parametrize(("text", "expected"), _cases(NUMBER_CASES))
def test_extract_number(text, expected):
    assert extract_number(text) == expected


PARSE_CASES = [
    ("thousands", "1,234", 1234.0),
    ("negative", "-7", -7.0),
    ("fraction", "3/4", 0.75),
    ("float-gold", "576.0", 576.0),
    ("percent", "50%", 50.0),
    ("currency", "$1,234.50", 1234.5),
    ("word-is-not-a-number", "nan", None),
    ("number-with-words", "7 apples", None),
    ("empty", "", None),
]


@pytest.mark.parametrize(("text", "expected"), _cases(PARSE_CASES))
def test_parse_number(text, expected):
    assert parse_number(text) == expected


LETTER_CASES = [
    ("parenthesised", "(D)", "D"),
    ("closing-paren", "The correct choice is D) 12 km", "D"),
    ("article-then-paren", "A train leaves at 3pm. The answer is (C).", "C"),
    ("response-prefix-then-answer", "\nA: Rationale: 5 + 3 = 8 km. Answer: B", "B"),
    ("answer-is", "So the answer is D.", "D"),
    ("option-word", "I pick option E", "E"),
    ("bare-letter", "E", "E"),
    ("bare-letter-after-article", "A car costs $5, so B", "B"),
    ("mid-sentence-A-is-an-answer", "I would choose A here", "A"),
    ("lower-case-words-only", "none of them", None),
    ("letter-outside-options", "F", None),
    ("restated-options-then-answer", "(A) 5 (B) 6 (C) 7. Answer: B", "B"),
]


@pytest.mark.parametrize(("text", "expected"), _cases(LETTER_CASES))
def test_extract_letter(text, expected):
    assert extract_letter(text) == expected


def test_extract_letter_respects_the_option_set():
    assert extract_letter("The answer is (E)", letters="ABCD") is None
    assert extract_letter("the answer is b", letters="ABCD") is None  # letters are capitals


KEYWORD_CASES = [
    ("answer-with-period", "answer3.", "answer", "answer3"),
    ("capitalised", "Answer3.", "answer", "answer3"),
    ("false", "the correct answer is false", "true/false", "false"),
    ("true-first-word", "True, because the sky is blue", "true/false", "true"),
    ("first-of-two", "false, not true", "true/false", "false"),
    ("answer-with-space", "Answer 2 is right", "answer", "answer2"),
    ("ending", "The best ending is ending4", "ending", "ending4"),
    ("first-solution", "solution1 or solution2", "solution", "solution1"),
    ("option", "Option 2 fits the blank", "option", "option2"),
    ("out-of-range", "option3", "option", None),
    ("answer-is-digit-is-no-keyword", "the answer is 3", "answer", None),
    ("untrue-is-not-true", "that is untrue", "true/false", None),
]


@pytest.mark.parametrize(("text", "family", "expected"), _cases(KEYWORD_CASES))
def test_extract_keyword(text, family, expected):
    assert extract_keyword(text, family) == expected


def test_unknown_keyword_family_raises():
    with pytest.raises(ValueError, match="unknown keyword family"):
        extract_keyword("answer1", "choice")


FAMILY_CASES = [
    ("answer", "answer3", "answer"),
    ("boolean", "false", "true/false"),
    ("number", "7", None),
    ("option", "option1", "option"),
    ("ending", "ending4", "ending"),
    ("solution", "solution2", "solution"),
]


@pytest.mark.parametrize(("gold", "expected"), _cases(FAMILY_CASES))
def test_keyword_family(gold, expected):
    assert keyword_family(gold) == expected


TYPE_CASES = [
    ("numbers", ["576.0", "-3.0"], "number"),
    ("numbers-with-commas", ["1,234", "7"], "number"),
    ("letters", ["A", "C"], "letter"),
    ("answer-keywords", ["answer1", "answer4"], "keyword"),
    ("booleans", ["true", "false"], "keyword"),
    ("mixed-families-are-text", ["true", "answer1"], "text"),
    ("words", ["Berlin", "Paris"], "text"),
    ("one-word-among-numbers", ["5", "five"], "text"),
    ("empty", [], "text"),
]


@pytest.mark.parametrize(("golds", "expected"), _cases(TYPE_CASES))
def test_infer_answer_type(golds, expected):
    assert infer_answer_type(golds) == expected


ANSWER_CASES = [
    ("number-integer", "The answer is 1,234.", "number", None, "1234"),
    ("number-fraction", "It is 3/4", "number", None, "0.75"),
    ("number-negative", "x = -7", "number", None, "-7"),
    ("number-none", "no idea", "number", None, None),
    ("letter", "The answer is (C).", "letter", None, "C"),
    ("keyword", "Answer 5", "keyword", "answer", "answer5"),
    ("text", "  Paris\n is   the Capital. ", "text", None, "paris is the capital"),
    ("text-empty", " ... ", "text", None, None),
]


@pytest.mark.parametrize(("text", "answer_type", "family", "expected"), _cases(ANSWER_CASES))
def test_extract_answer(text, answer_type, family, expected):
    assert extract_answer(text, answer_type, family) == expected


def test_extract_answer_needs_a_family_for_keywords():
    with pytest.raises(ValueError, match="family"):
        extract_answer("answer1", "keyword")


CORRECT_CASES = [
    ("within-tolerance", "576.0004", "576.0", "number", True),
    ("outside-tolerance", "576.01", "576.0", "number", False),
    ("none-prediction", None, "576.0", "number", False),
    ("comma-gold", "1234", "1,234", "number", True),
    ("fraction-gold", "0.75", "3/4", "number", True),
    ("unparseable-gold", "5", "five", "number", False),
    ("letter-case-insensitive", "c", "C", "letter", True),
    ("letter-wrong", "B", "C", "letter", False),
    ("keyword", "answer3", "Answer3", "keyword", True),
    ("keyword-wrong", "answer2", "answer3", "keyword", False),
    ("text-normalised", "paris", " Paris. ", "text", True),
    ("text-wrong", "berlin", "Paris", "text", False),
]


@pytest.mark.parametrize(("prediction", "gold", "answer_type", "expected"), _cases(CORRECT_CASES))
def test_is_correct(prediction, gold, answer_type, expected):
    assert is_correct(prediction, gold, answer_type) is expected


def test_extracted_numbers_round_trip_through_is_correct():
    prediction = extract_answer("so the total is 1e20 ... I mean 100000000000000000000", "number")
    assert is_correct(prediction, "100000000000000000000", "number")
