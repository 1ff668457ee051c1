"""The adapter store: names → adapter folders under one root, loaded on first use, least recently used evicted
when the loaded adapters outgrow the memory budget. Paths outside the root are refused, links that lead out of it
too, and what the store shows (listings, errors) names folders relative to the root, never the server's own paths."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmtune.errors import LmtuneError, did_you_mean
from lmtune.serve.artifact import describe, is_adapter_folder
from lmtune.serve.forms import ServedAdapter


@dataclass
class AdapterInfo:
    name: str
    kind: str
    base: str
    path: str
    loaded: bool
    nbytes: int | None
    labels: list[str] | None
    method: str


class AdapterStore:
    def __init__(self, root: str | Path | None, reader: Callable[[str, Path], ServedAdapter], budget_bytes: int):
        self.root = Path(root).resolve() if root else None
        self._reader, self.budget_bytes = reader, budget_bytes
        self._paths: dict[str, Path] = {}
        self._loaded: OrderedDict[str, ServedAdapter] = OrderedDict()
        self._lock = threading.RLock()
        if self.root is not None:
            if not self.root.is_dir():
                raise LmtuneError(f"adapter root {self.root} is not a folder")  # the operator's own message
            self.scan()

    def scan(self) -> list[str]:
        """Register every adapter folder under the root by its path relative to the root (`runs/sst2-lora` → `sst2-lora`)."""
        found = []
        for marker in sorted([*self.root.rglob("adapter_config.json"), *self.root.rglob("provenance.json")]):
            folder = marker.parent
            if any(part.startswith(("checkpoint-", ".")) for part in folder.relative_to(self.root).parts):
                continue  # Trainer checkpoints and hidden folders are not adapters
            name = folder.relative_to(self.root).as_posix()
            if not self._inside(folder.resolve()):
                continue  # a linked folder that leads out of the root
            if name != "." and is_adapter_folder(folder) and name not in self._paths:
                self._paths[name] = folder
                found.append(name)
        return found

    def resolve_path(self, path: str | Path) -> Path:
        if self.root is None:
            raise LmtuneError("the server has no adapter root (--adapters): it cannot load adapters")
        candidate = Path(path)
        resolved = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        if not self._inside(resolved):
            raise LmtuneError(f"adapter path {path!r} is outside the adapter root; refused (give a path relative to it)")
        if not resolved.is_dir() or not is_adapter_folder(resolved):
            raise LmtuneError(f"{path!r} is not an adapter folder under the adapter root (no adapter_config.json or "
                              "run files)")
        return resolved

    def _inside(self, resolved: Path) -> bool:
        return resolved == self.root or self.root in resolved.parents

    def shown(self, folder: Path) -> str:
        """A folder as clients see it: relative to the root."""
        try:
            return folder.resolve().relative_to(self.root).as_posix()
        except (ValueError, AttributeError, TypeError):
            return folder.name

    def _read(self, name: str, folder: Path) -> ServedAdapter:
        """Read an adapter; whatever is wrong with its files is a LmtuneError naming the adapter (HTTP 400)."""
        try:
            return self._reader(name, folder)
        except LmtuneError as err:
            message = str(err)
            raise LmtuneError(message if name in message else f"adapter {name!r}: {message}") from None
        except Exception as err:  # noqa: BLE001 - unexpected contents: a request error, not a server crash
            raise LmtuneError(f"adapter {name!r} could not be read ({type(err).__name__}: {err}); check its files") from None

    def register(self, name: str, path: str | Path) -> AdapterInfo:
        """Add (or replace) `name`, loading it at once so a bad adapter fails here and not on a request."""
        if not name.strip() or name.startswith("/") or ".." in name.split("/"):
            raise LmtuneError(f"invalid adapter name {name!r}: use a plain name such as 'sst2-lora'")
        folder = self.resolve_path(path)
        adapter = self._read(name, folder)
        with self._lock:
            self._paths[name] = folder
            self._loaded.pop(name, None)
            self._insert(adapter)
        return self.info(name)

    def unregister(self, name: str) -> None:
        with self._lock:
            if name not in self._paths:
                raise LmtuneError(self._unknown(name))
            del self._paths[name]
            self._loaded.pop(name, None)

    def get(self, name: str) -> ServedAdapter:
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            if name not in self._paths:
                raise LmtuneError(self._unknown(name))
            folder = self._paths[name]
        adapter = self._read(name, folder)  # outside the lock: reading a file must not stall other requests
        with self._lock:
            self._insert(adapter)
        return adapter

    def _insert(self, adapter: ServedAdapter) -> None:
        self._loaded[adapter.name] = adapter
        self._loaded.move_to_end(adapter.name)
        # Evicted adapters still in a running batch stay alive through the batch's references; they reload on next use.
        while self.loaded_bytes() > self.budget_bytes and len(self._loaded) > 1:
            self._loaded.popitem(last=False)

    def loaded_bytes(self) -> int:
        return sum(a.nbytes() for a in self._loaded.values())

    def names(self) -> list[str]:
        return sorted(self._paths)

    def loaded_names(self) -> list[str]:
        """The adapters in memory now, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def info(self, name: str) -> AdapterInfo:
        adapter = self._loaded.get(name)
        if adapter is None:
            kind, base, method, labels = describe(self._paths[name])
            return AdapterInfo(name, kind, base, self.shown(self._paths[name]), False, None, labels, method)
        labels = adapter.head.labels if adapter.head else None
        return AdapterInfo(name, adapter.kind, adapter.base, self.shown(adapter.source), True, adapter.nbytes(), labels,
                           adapter.method)

    def list(self) -> list[AdapterInfo]:
        with self._lock:
            return [self.info(n) for n in self.names()]

    def _unknown(self, name: str) -> str:
        suggestion = did_you_mean(name, self.names())
        known = ", ".join(self.names()[:20]) or "none"
        return f"unknown adapter {name!r}. {suggestion + ' ' if suggestion else ''}Known adapters: {known}"
