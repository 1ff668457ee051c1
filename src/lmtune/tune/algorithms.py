"""Search algorithms: one file each, registered by name (`algorithm: tpe | random | grid | de | pbt`).

A new algorithm is a `SearchAlgorithm` subclass with `@register_algorithm` in its own module, imported in
`lmtune/tune/__init__.py`. Modules import their library (optuna, nevergrad, ray) inside functions, so registering is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from lmtune.registry import Registry

if TYPE_CHECKING:
    from lmtune.tune.study import Study
    from lmtune.tune.trial import TrialRecord

class SearchAlgorithm:
    name: ClassVar[str]
    summary: ClassVar[str] = ""

    def check(self, study: Study) -> None:
        """Refuse a space or options this algorithm cannot search, before any trial runs."""

    def run(self, study: Study, worker_only: bool = False) -> None:
        """Run trials until the budget is spent; finished trials of an earlier, killed invocation are kept."""
        raise NotImplementedError

    def records(self, study: Study) -> list[TrialRecord]:
        """Every trial of the study so far, in order, for the summary and the report."""
        raise NotImplementedError

    def lost_errors(self) -> list[str]:
        """Errors of trials that left no record (a worker that died before it reported anything)."""
        return []


ALGORITHMS: Registry[SearchAlgorithm] = Registry("search algorithm")
register_algorithm = ALGORITHMS.register
