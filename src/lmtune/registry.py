"""A name → class registry with the errors users see: strategies, tasks and baselines all use one."""

from __future__ import annotations

import difflib
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, plural: str | None = None):
        self.kind, self.plural = kind, plural or f"{kind}s"
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        if cls.name in self._classes:  # type: ignore[attr-defined]
            raise ValueError(f"{self.kind} {cls.name!r} is registered twice")  # type: ignore[attr-defined]
        self._classes[cls.name] = cls  # type: ignore[attr-defined]
        return cls

    def all(self) -> dict[str, type[T]]:
        return dict(self._classes)

    def get(self, name: str) -> type[T]:
        """The class of `name`; an unknown name says what was probably meant and what exists."""
        if name not in self._classes:
            close = difflib.get_close_matches(str(name), list(self._classes), n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(f"unknown {self.kind} {name!r}; {hint}known {self.plural}: {', '.join(sorted(self._classes))}")
        return self._classes[name]
