"""Which checkpoint a killed run resumes from: the newest complete one.

Trainer writes a checkpoint in place, one file after another (weights, optimizer, scheduler, RNG state, then
trainer_state.json), and then deletes the oldest beyond `save_total_limit`. A SIGKILL in between leaves a folder
that transformers' `get_last_checkpoint` still picks: resume then fails on the missing trainer_state.json, or,
worse, Trainer quietly starts a fresh optimizer when only optimizer.pt is missing. So a checkpoint counts when
every file resume reads is there and trainer_state.json, written last, parses. That test is read off the files
themselves, not a marker written after Trainer returns: a kill during the rotation would leave the new, complete
checkpoint unmarked and an old, half-deleted one still marked.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from lmtune.train import ranks

TRAINER_STATE = "trainer_state.json"
REQUIRED = (TRAINER_STATE, "model.safetensors", "scheduler.pt")
# The optimizer: optimizer.pt, or under FSDP accelerate's own files (optimizer.bin or a sharded optimizer_0/) beside
# its model state (pytorch_model_fsdp.bin or pytorch_model_fsdp_0/), which resume loads instead of model.safetensors.
FSDP_MODEL = "pytorch_model_fsdp*"
FSDP_OPTIMIZER = ("optimizer.bin", "optimizer_0")
RNG_STATE = "rng_state*.pth"  # rng_state.pth, or rng_state_<rank>.pth per process under torchrun
NAME = re.compile(r"^checkpoint-(\d+)$")


def incomplete_reason(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None when it can."""
    missing = [name for name in REQUIRED if not (checkpoint / name).is_file()]
    missing += _missing_optimizer(checkpoint) + _missing_rng_states(checkpoint)
    if missing:
        return "no " + ", ".join(missing)
    try:
        json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{TRAINER_STATE} is cut short"
    return None


def _missing_optimizer(checkpoint: Path) -> list[str]:
    if (checkpoint / "optimizer.pt").is_file():
        return []
    if any((checkpoint / name).exists() for name in FSDP_OPTIMIZER):  # FSDP: its model state must be there too
        return [] if any(checkpoint.glob(FSDP_MODEL)) else [FSDP_MODEL.replace("*", ".bin")]
    return ["optimizer.pt"]


def _missing_rng_states(checkpoint: Path) -> list[str]:
    """Every rank writes its own RNG state (rng_state_<rank>.pth) under torchrun; a single process rng_state.pth."""
    size = ranks.world_size()
    if size == 1:
        return [] if any(checkpoint.glob(RNG_STATE)) else ["rng_state.pth"]
    return [name for name in (f"rng_state_{r}.pth" for r in range(size)) if not (checkpoint / name).is_file()]


def newest_complete(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder`. Newer incomplete ones are reported and removed: they are
    lmtune's own; training writes that step again, and Trainer's rotation, which goes by modification time,
    would otherwise keep a half-written one and delete a complete one."""
    if not folder.is_dir():
        return None
    steps = sorted(((int(m[1]), p) for p in folder.iterdir() if p.is_dir() and (m := NAME.match(p.name))), reverse=True)
    for _, path in steps:
        reason = incomplete_reason(path)
        if reason is None:
            return path
        print(f"train.resume: {path.name} was cut short when the run stopped ({reason}); removing it and "
              "resuming from the checkpoint before it")
        shutil.rmtree(path)
    return None
