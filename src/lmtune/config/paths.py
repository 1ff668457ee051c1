"""Where relative paths in a config point: one rule for every command.

A relative path in a config file or an `a.b=c` override is relative to the directory lmtune was run from (the
working directory of `lmtune train`, `compare`, `tune` or `pretrain`), never to the config file's folder and
never to the working directory of a worker process (Ray runs PBT members in folders of its own; a spawned
process may start elsewhere). Each config is resolved once, when it is loaded: every field marked `LocalPath`
becomes absolute, so the resolved config saved with a run re-runs from anywhere.

Fields say that they hold a path with `Annotated[str, LocalPath()]`; shared code never lists field names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class LocalPath:
    """Marks a config field that holds a file or folder path (or a list of them, or glob patterns)."""

    only_if_exists: bool = False
    """The value may also name something that is not a path (a bundled model name, a hub id): only a value that
    exists as a file or folder under the base directory is made absolute."""
    unless: str | None = None
    """A sibling field that, when set, makes the value something else (`data.hub`: then train/validation/test
    are split names)."""


def absolute(value: str, base_dir: str | Path) -> str:
    """`value` made absolute against `base_dir` (`~` expanded); an absolute value is returned unchanged."""
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))  # join keeps an absolute value


def path_updates(model: BaseModel, base_dir: str | Path, prefix: str = "") -> dict[str, Any]:
    """Dotted key → absolute value for every relative path in `model` (and its sections)."""
    updates: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        marker = next((m for m in field.metadata if isinstance(m, LocalPath)), None)
        if marker is not None:
            resolved = _resolve(value, marker, model, base_dir)
            if resolved != value:
                updates[prefix + name] = resolved
        elif isinstance(value, BaseModel):
            updates.update(path_updates(value, base_dir, f"{prefix}{name}."))
    return updates


def resolve_paths(model: M, base_dir: str | Path | None = None) -> M:
    """A copy of `model` (a StrictModel) with every relative path made absolute against `base_dir` (the working
    directory by default)."""
    updates = path_updates(model, Path(base_dir) if base_dir is not None else Path.cwd())
    return model.updated(updates) if updates else model  # type: ignore[attr-defined]


def _resolve(value: Any, marker: LocalPath, owner: BaseModel, base_dir: str | Path) -> Any:
    if value is None or (marker.unless and getattr(owner, marker.unless, None)):
        return value
    if isinstance(value, list):
        return [_resolve(item, marker, owner, base_dir) for item in value]
    if not isinstance(value, str) or not value:
        return value
    if marker.only_if_exists and not Path(absolute(value, base_dir)).exists():
        return value
    return absolute(value, base_dir)
