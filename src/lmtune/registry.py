"""The one name → class registry: strategies, tasks, baselines, search algorithms and served adapter types.

Each kind of plug-in keeps one module-level `Registry` and a one-line decorator (`register_strategy =
STRATEGIES.register`); shared code asks the registry (`STRATEGIES.get(name)`, `.config_class(name)`,
`.build(name, ...)`), so no kind writes its own lookup functions or its own "did you mean".
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from lmtune.errors import did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, plural: str | None = None, default: str | None = None):
        """`default`: the name a config section without `name` gets (LoRA for `method`, classification for `task`)."""
        self.kind, self.plural, self.default = kind, plural or f"{kind}s", default
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: the one line that makes a plug-in known to the config, the CLI and the tests."""
        if cls.name in self._classes:  # type: ignore[attr-defined]
            raise ValueError(f"{self.kind} {cls.name!r} is registered twice")  # type: ignore[attr-defined]
        self._classes[cls.name] = cls  # type: ignore[attr-defined]
        return cls

    def all(self) -> dict[str, type[T]]:
        return dict(self._classes)

    def names(self) -> list[str]:
        return sorted(self.all())

    def __contains__(self, name: object) -> bool:
        return name in self.all()

    def get(self, name: str) -> type[T]:
        """The class of `name`; an unknown name says what was probably meant and what exists."""
        if name not in self._classes:
            suggestion = did_you_mean(name, self._classes)
            raise ValueError(f"unknown {self.kind} {name!r}; {suggestion + ' ' if suggestion else ''}"
                             f"known {self.plural}: {', '.join(sorted(self._classes))}")
        return self._classes[name]

    def config_class(self, name: str) -> Any:
        """The config class that validates the section naming `name` (each plug-in class has `config_cls`)."""
        return self.get(name).config_cls  # type: ignore[attr-defined]

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.get(name)(*args, **kwargs)
