"""One `lmtune train` as several processes, for `lmtune compare` and `lmtune tune` (`launch.processes` > 1): the
run goes to torchrun or accelerate launch in a subprocess, exactly the command a user would type, and its
metrics.json is read back. Nothing here schedules processes itself."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from lmtune.config.schema import LaunchConfig
from lmtune.errors import LmtuneError
from lmtune.train import rundir

# accelerate options that choose the kind of launch themselves; without one, N processes need --multi_gpu
# (accelerate's plain launcher starts one process, however many --num_processes say).
ACCELERATE_MODES = ("--config_file", "--multi_gpu", "--use_fsdp", "--use_deepspeed", "--cpu", "--mpirun_hostfile")


def launch_command(launch: LaunchConfig, config: Path, overrides: list[str] = ()) -> list[str]:
    processes = str(launch.processes)
    if launch.launcher == "torchrun":
        # --standalone: a rendezvous on a free local port, so several launches can run side by side
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", processes]
    else:
        head = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", processes,
                "--main_process_port", str(free_port())]
        if not any(arg.split("=")[0] in ACCELERATE_MODES for arg in launch.args):
            head.append("--multi_gpu")
    return [*head, *launch.args, "-m", "lmtune", "train", str(config), *overrides]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_launched(launch: LaunchConfig, config: Path, run_dir: Path, log: Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Run `config` (a run config file) through the launcher, output appended to `log`; its metrics.json."""
    command = launch_command(launch, config, overrides)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=os.environ.copy()).returncode
    if code != 0 or not rundir.is_finished(run_dir):
        raise LmtuneError(f"{launch.launcher} exited with {code}{_last_error(log)}; its output is in {log}")
    return json.loads((run_dir / rundir.METRICS_FILE).read_text())


def _last_error(log: Path) -> str:
    """The run's own message (`error: ...`, printed by every rank alike) when there is one."""
    errors = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.startswith("error: ")]
    return f" ({errors[-1][len('error: '):]})" if errors else ""
