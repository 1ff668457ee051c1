"""`lmtune tune` scaled out the ways docs/tune.md promises, on real servers on loopback: two workers on a real
PostgreSQL database share one study (a worker killed mid-trial, on another "machine", is noticed by Optuna's
heartbeat and its trial retried by the other), and PBT on a real Ray cluster (`ray start --head`) resumes a killed
study through `Tuner.restore` without re-running finished intervals."""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lmtune.cli import main
from test_tune import ROOT, study_raw, write_study

pytest.importorskip("optuna", reason="lmtune tune needs its extra: pip install -e '.[tune]'")
INSTALL_POSTGRES = "apt-get install -y postgresql (make test installs it)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, seconds: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process ended first:\n{process.stdout.read()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def lmtune(*args: str, env: dict | None = None, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    return subprocess.Popen([*prefix, sys.executable, "-m", "lmtune", "tune", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# --- PostgreSQL ----------------------------------------------------------------------------------------------

def _postgres_binary(name: str) -> str | None:
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (trust authentication), stopped and removed afterwards."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver comes with the tune extra: pip install -e '.[tune]'")
    initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip(f"PostgreSQL is not installed: {INSTALL_POSTGRES}")
    folder = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))  # short: the socket path must fit in 107 bytes
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip(f"running as root without a postgres user: {INSTALL_POSTGRES}")
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = folder / "data"
    try:
        subprocess.run([*as_user, initdb, "-D", str(data), "-U", "lmtune", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "60", "-o",
                        f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}", "start"],
                       check=True, capture_output=True, timeout=90)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        log = (folder / "log").read_text() if (folder / "log").is_file() else ""
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start ({err}; {getattr(err, 'stderr', b'')!r}; {log[-500:]}): {INSTALL_POSTGRES}")
    try:
        yield f"postgresql://lmtune@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def _can_rename_host() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--uts", "hostname", "other-machine"], capture_output=True).returncode == 0


def test_two_workers_on_postgres_share_the_budget_and_retry_a_killed_workers_trial(
        tmp_path, tiny_models, toy_data, postgres_url):
    import optuna

    if not _can_rename_host():
        pytest.skip("needs `unshare --uts` (root) to give the doomed worker a host name of its own")
    raw = study_raw(tmp_path, tiny_models, toy_data, steps=60, budget={"trials": 6},
                    optuna={"heartbeat_seconds": 1, "grace_seconds": 3})
    path = write_study(tmp_path, raw)
    survivor = lmtune(str(path), "--worker", "--storage", postgres_url)
    # The doomed worker runs under another host name, as on another machine: only the heartbeat can tell that it
    # died (the same-machine check looks for its pid, and never finds a pid of another host).
    doomed = lmtune(str(path), "--worker", "--storage", postgres_url,
                    prefix=("unshare", "--uts", "sh", "-c", 'hostname other-machine && exec "$@"', "sh"))

    def doomed_trial():
        try:
            study = optuna.load_study(study_name="study", storage=postgres_url)
        except KeyError:  # not created yet
            return None
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return next((t for t in running if t.user_attrs.get("worker", "").startswith("other-machine:")), None)

    try:
        wait_for(lambda: doomed_trial() is not None, 180, "the doomed worker's first trial", doomed)
        victim = doomed_trial().number
        doomed.kill()
        doomed.wait()
        output, _ = survivor.communicate(timeout=300)
    finally:
        for process in (survivor, doomed):
            if process.poll() is None:
                process.kill()
            process.stdout.close()
    assert survivor.returncode == 0, output
    assert f"trial {victim} was killed; it runs again with the same parameters" in output
    assert main(["tune", str(path), "--storage", postgres_url, "--summary"]) == 0
    summary = json.loads((tmp_path / "study" / "summary.json").read_text())
    assert summary["trials"]["complete"] == 6 and summary["trials"]["killed"] == 1  # the budget is global
    trials = optuna.load_study(study_name="study", storage=postgres_url).get_trials()
    killed = trials[victim]
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim)
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["dir"] == killed.user_attrs["dir"]  # the same folder: its run resumed there
    assert not retry.user_attrs["worker"].startswith("other-machine:")  # the survivor ran it


# --- Ray cluster ---------------------------------------------------------------------------------------------

@pytest.fixture
def ray_cluster():
    """`ray start --head --block` on 127.0.0.1 with a private temp folder and token authentication; the
    environment a driver needs to join it. Stopped by signalling that one command (never `ray stop`, which would
    stop every Ray on the machine)."""
    pytest.importorskip("ray.tune")
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    port = free_port()
    # Loopback only (Ray otherwise binds the machine's network address); token authentication as Ray 2.60's default.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    head = subprocess.Popen([ray, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--num-cpus=2", f"--temp-dir={temp}", "--include-dashboard=false",
                             "--disable-usage-stats"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: glob.glob(f"{temp}/session_latest/logs/gcs_server.out"), 60, "the Ray head", head)
        time.sleep(2)  # the raylet registers after the GCS
        yield {"address": f"127.0.0.1:{port}",
               "env": {k: env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}}
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` drains and stops the processes it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        head.stdout.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_pbt_on_a_ray_cluster_resumes_a_killed_study_without_rerunning_intervals(
        tmp_path, tiny_models, toy_data, ray_cluster):
    raw = study_raw(tmp_path, tiny_models, toy_data, algorithm="pbt", workers=2, budget={"trials": 2},
                    space={"train.learning_rate": {"low": 1.0e-4, "high": 1.0e-1, "log": True}},
                    pbt={"interval_steps": 8, "intervals": 8, "quantile_fraction": 0.5,
                         "address": ray_cluster["address"]})
    path = write_study(tmp_path, raw)
    folder = tmp_path / "study"
    schedule = folder / "pbt" / "schedule.jsonl"
    entries = lambda: [json.loads(line) for line in schedule.read_text().splitlines()] if schedule.is_file() else []
    snapshots = lambda: [p.stat().st_mtime for p in (folder / "ray" / "pbt").glob("experiment_state*.json")]
    saved = lambda: max(snapshots(), default=0.0)
    driver = lmtune(str(path), env=ray_cluster["env"])
    margin = 2.0  # seconds from a member's report to the driver's snapshot (which happens every second)
    try:  # kill once Ray has snapshotted the experiment after at least two finished intervals
        wait_for(lambda: len(entries()) >= 2 and saved() > entries()[1]["time"] + margin, 240, "a snapshot", driver)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.stdout.close()
    before, snapshot = entries(), saved()
    assert len(before) < 16, f"the study finished before it was killed (snapshots at {snapshots()}, " \
        f"intervals reported at {[e['time'] for e in before]})"
    # Intervals reported before Ray's last snapshot must not train again (one reported in the second before the
    # kill may: Ray restores the member from the checkpoint the snapshot names).
    finished = {(e["trial_id"], e["interval"]) for e in before if e["time"] <= snapshot - margin}
    stamp = lambda runs: {Path(run) / "metrics.json": (Path(run) / "metrics.json").stat().st_mtime_ns for run in runs}
    stamps = {k: v for e in before if (e["trial_id"], e["interval"]) in finished for k, v in stamp(e["runs"]).items()}
    assert len(stamps) >= 2
    again = lmtune(str(path), env=ray_cluster["env"])
    output, _ = again.communicate(timeout=300)
    again.stdout.close()
    assert again.returncode == 0, output
    after = entries()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the finished intervals' runs are untouched
    assert {e["trial_id"] for e in after} == {e["trial_id"] for e in before}  # the same members, restored
    rerun = [(e["trial_id"], e["interval"]) for e in after[len(before):] if (e["trial_id"], e["interval"]) in finished
             and e.get("exploited_from") is None]
    assert not rerun, f"intervals trained again after the resume: {rerun}"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["trials"]["complete"] == 2
    for member in {e["trial_id"] for e in after}:  # every member trained to its last interval
        assert max(e["interval"] for e in after if e["trial_id"] == member) == 7
