"""Atomic artifact writes and content hashes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

from lmtune.errors import LmtuneError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, then rename the temp file onto `path`, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; artifacts and reports are meant to be shared and read
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_yaml(path: str | Path, data: Any) -> Path:
    return write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def save_pretrained_atomically(directory: Path, *savers: Any) -> list[Path]:
    """`save_pretrained` writes in place; write into a temp folder, then move each file into `directory`."""
    tmp = directory.parent / f".{directory.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for saver in savers:
        saver.save_pretrained(tmp)
    return move_dir_contents_atomically(tmp, directory)


def move_dir_contents_atomically(src: Path, dst: Path) -> list[Path]:
    """Move every file of `src` (written by a library that saves in place) into `dst`, one rename each."""
    dst.mkdir(parents=True, exist_ok=True)
    moved = []
    for item in sorted(src.rglob("*")):
        if item.is_file():
            target = dst / item.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(item, target)
            moved.append(target)
    shutil.rmtree(src, ignore_errors=True)
    return moved


def sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def dir_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def remove_made_folder(folder: Path, markers: tuple[str, ...], what: str) -> None:
    """Remove `folder`, but only when it holds one of the files lmtune writes into such a folder: nothing is
    deleted that lmtune did not make (`output.overwrite=true` with a typo in the output path stays harmless)."""
    check_made_folder(folder, markers, what)
    # Renamed away first: a kill during rmtree then leaves a hidden leftover, never a half-deleted folder that
    # has lost its marker (and so can no longer be replaced) or looks like an unfinished run.
    trash = folder.with_name(f".{folder.name}.removing-{os.getpid()}")
    os.replace(folder, trash)
    for leftover in [trash, *folder.parent.glob(f".{folder.name}.removing-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def check_made_folder(folder: Path, markers: tuple[str, ...], what: str) -> None:
    """Refuse, naming the fix, a folder that holds none of `markers` (so lmtune did not make it)."""
    if not any((folder / marker).exists() for marker in markers):
        raise LmtuneError(
            f"{folder} is not {what} (it holds none of {', '.join(markers)}): output.overwrite only replaces folders "
            "lmtune made. Choose another output folder or name, or move this one away yourself."
        )


def check_writable_location(folder: Path, setting: str) -> None:
    """Refuse, changing nothing, a `folder` that cannot be made and written: a file where a folder belongs, or
    a read-only or foreign folder as its nearest existing parent. Said before long work, not as a traceback."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise LmtuneError(f"{existing} is a file, not a folder; set {setting} to a folder (it is created if missing)")
    _probe_write(existing, folder, setting)


def make_writable_dir(folder: Path, setting: str) -> Path:
    """Create `folder` (and its parents) and check that files can be written in it, with an error that names the
    setting to change instead of a traceback (a file where a folder belongs, a read-only mount)."""
    check_writable_location(folder, setting)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LmtuneError(f"cannot write in {folder} ({err.strerror or err}); set {setting} to a writable folder") from None
    _probe_write(folder, folder, setting)
    return folder


def _probe_write(where: Path, folder: Path, setting: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        at = "" if where == folder else f" at {where}"
        raise LmtuneError(f"cannot write in {folder} ({err.strerror or err}{at}); set {setting} to a writable folder") from None
