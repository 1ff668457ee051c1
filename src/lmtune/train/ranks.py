"""Several processes of one run (`torchrun --nproc_per_node N -m lmtune train`, `accelerate launch`): who does what.

Trainer and accelerate do the data parallelism; this module only decides which process touches the run directory.
The main process (global rank 0) checks, claims, writes and deletes; every other rank waits for its verdict and
stops with the same error when it refuses, so a refused config ends every rank within seconds instead of leaving
the others blocked in the first collective of training.

A single process (no WORLD_SIZE > 1 in the environment, which torchrun and accelerate set) never initialises a
process group here: every helper then just calls the function it was given.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Callable, TypeVar

from lmtune.errors import LmtuneError

T = TypeVar("T")
# Trainer's default `ddp_timeout`: the process group is created here, before TrainingArguments would create it, so
# the waits below and Trainer's collectives get the timeout Trainer would have given them.
TIMEOUT = timedelta(seconds=1800)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def distributed() -> bool:
    """True in a process started by torchrun/accelerate launch with more than one process."""
    return world_size() > 1


def rank() -> int:
    return int(os.environ.get("RANK", "0")) if distributed() else 0


def is_main() -> bool:
    return rank() == 0


def start(sharded: bool = False) -> None:
    """Make the process group of a run launched as several processes (nothing for a single process). `sharded`
    (train.fsdp): on CUDA, gloo beside nccl, as `accelerate launch --use_fsdp` would set up, for the collectives
    on CPU tensors that offloaded or gathered FSDP state needs."""
    if distributed():
        from lmtune.device import sharded_backend

        _state(sharded_backend() if sharded else None)


def _state(backend: str | None = None):
    """accelerate's process state; the first call initialises the process group (nccl on CUDA, gloo on CPU), and
    Trainer uses it (`trainer_settings`). `cpu` must be said: accelerate takes a torchrun process on a machine
    without CUDA for a single process unless told it runs on the CPU, and each rank would then train alone on all
    the data."""
    from accelerate import PartialState

    from lmtune.device import cuda_available

    return PartialState(cpu=not cuda_available(), backend=backend, timeout=TIMEOUT)


def trainer_settings() -> dict:
    """TrainingArguments for the process state made here: Trainer would otherwise reset it and build its own,
    which on a CPU machine is not distributed (see `_state`)."""
    if not distributed():
        return {}
    _state()
    return {"accelerator_config": {"use_configured_state": True}}


def _broadcast(verdict: tuple) -> tuple:
    from accelerate.utils import broadcast_object_list

    box = [verdict]
    broadcast_object_list(box, from_process=0)
    return box[0]


def on_main(work: Callable[[], T], what: str) -> T:
    """`work()` on the main process only; the others wait for it and get its result (it must pickle), or raise
    its error. `what` names the step in the other ranks' error message."""
    if not distributed():
        return work()
    state = _state()
    if is_main():
        try:
            result = work()
        except BaseException as err:
            _broadcast(("error", _message(err)))
            state.wait_for_everyone()  # every rank has the verdict before any exits (the launcher then stops the rest)
            raise
        return _broadcast(("ok", result))[1]
    kind, value = _broadcast((None, None))
    if kind == "error":
        state.wait_for_everyone()
        raise LmtuneError(f"the main process stopped while {what}: {value}")
    return value


def main_first(work: Callable[[], T], what: str) -> T:
    """`work()` on every process, the main one first: what it writes to shared caches (a converted GGUF model, the
    datasets cache) is there before the others read it, and when it fails the others stop without trying."""
    if not distributed():
        return work()
    done: list[T] = []
    on_main(lambda: done.append(work()), what)  # the others pass this point once the main process succeeded
    return done[0] if is_main() else work()


def _message(err: BaseException) -> str:
    return str(err) if isinstance(err, LmtuneError) else f"{type(err).__name__}: {err}"
