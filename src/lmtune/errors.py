"""The one exception users see: a message naming the problem and the fix; and the one "did you mean"."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LmtuneError(Exception):
    """A problem with the user's input or environment; the CLI prints it without a traceback."""


def did_you_mean(word: object, known: Iterable[str], cutoff: float = 0.5) -> str:
    """`"did you mean 'lora'?"` for the known name closest to `word`, or "" when none is close: every message that
    refuses a name (a strategy, a config key, an adapter, a metric) suggests the same way."""
    close = difflib.get_close_matches(str(word), list(known), n=1, cutoff=cutoff)
    return f"did you mean '{close[0]}'?" if close else ""


def hint(word: object, known: Iterable[str], cutoff: float = 0.5) -> str:
    """`did_you_mean` as a clause to splice into a sentence: "; did you mean 'x'?" or ""."""
    suggestion = did_you_mean(word, known, cutoff)
    return f"; {suggestion}" if suggestion else ""
