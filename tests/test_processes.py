"""Several processes of one run (issue 15): `torchrun --nproc_per_node 2` (gloo) on a tiny model writes one run
directory from one process, trains to the validation loss of one process with the same global batch, resumes
after both processes are killed, and stops every rank within seconds when the main process refuses a config.
`lmtune compare` with `launch.processes: 2` drives the resume, so its launcher is tested by the same launches.

Three launches of two processes in all (each pays Python + torch start-up twice): kept to that on purpose."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from conftest import ROOT, tiny_raw_config
from lmtune.config.schema import FsdpConfig, LaunchConfig
from lmtune.errors import LmtuneError
from lmtune.runconfig import resolve, resolve_config
from lmtune.train import ranks
from lmtune.train.checkpoints import incomplete_reason
from lmtune.train.fsdp import check_sharded, fsdp_arguments
from lmtune.train.launch import launch_command

MAX_STEPS = 8
# Loaded at start-up by the run that is killed: each optimizer step takes 0.3 s, so the kill lands after the
# step-4 checkpoint and before the end however busy the machine is.
SLOW_STEPS = """
import time
from transformers import Trainer
_step = Trainer.training_step
Trainer.training_step = lambda self, *a, **k: (time.sleep(0.3), _step(self, *a, **k))[1]
"""


def _env(*paths: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([*map(str, paths), str(ROOT / "src")])}


def _launch(config: Path, log: Path, *overrides: str, hook: Path | None = None) -> subprocess.Popen:
    command = launch_command(LaunchConfig(processes=2), config, list(overrides))
    env = _env(*([hook] if hook else []))
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _kill_all(process: subprocess.Popen) -> None:
    """SIGKILL torchrun and both workers at once (they run in sessions of their own, so not by process group)."""
    workers = psutil.Process(process.pid).children(recursive=True)
    for each in [process, *workers]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each.pid, signal.SIGKILL)
    process.wait()
    psutil.wait_procs(workers, timeout=30)


def _kill_after_checkpoint(process: subprocess.Popen, checkpoints: Path, step: int) -> Path:
    wanted = checkpoints / f"checkpoint-{step}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        ranks_done = all((wanted / f"rng_state_{r}.pth").is_file() for r in range(2))
        if wanted.is_dir() and ranks_done and incomplete_reason(wanted) is None:
            _kill_all(process)
            return wanted
        time.sleep(0.02)
    raise AssertionError(f"no complete {wanted} before the run ended (exit {process.poll()})")


def _entries(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_two_processes_write_one_run_resume_after_a_kill_and_fail_together(tmp_path, tiny_models, toy_data, monkeypatch):
    raw = tiny_raw_config(tiny_models["bert"], toy_data, tmp_path / "compare", {"name": "lora", "rank": 2},
                          batch_size=8, max_steps=MAX_STEPS, eval_every="steps", eval_steps=2, logging_steps=2,
                          lr_scheduler="constant",
                          # uniformly random batches: one process and two then draw the same rows per global step
                          # (the length-grouped sampler groups a rank's share differently from the whole batch)
                          group_by_length=False,
                          keep_best=False)  # the weights after the last step, not whichever checkpoint scored best
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))

    # One process with the same global batch (2 × 8): the reference, in this process
    from lmtune.train import train

    reference = train(resolve_config(raw, ["train.batch_size=16", f"output.dir={tmp_path / 'one'}"]))
    assert not torch.distributed.is_initialized()  # the single-process path makes no process group

    # Two processes, killed (both, at once) once the step-4 checkpoint is complete
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_STEPS)
    run_dir = tmp_path / "compare" / "lora"
    killed = _launch(config, tmp_path / "killed.log", "output.name=lora", hook=hook)
    _kill_after_checkpoint(killed, run_dir / "checkpoints", 4)
    assert not (run_dir / "metrics.json").is_file()
    before = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))

    # The main process refuses the unfinished run without train.resume: both ranks stop, at once, saying so
    started = time.monotonic()
    refused = _launch(config, tmp_path / "refused.log", "output.name=lora")
    assert refused.wait(timeout=120) != 0
    seconds = time.monotonic() - started
    out = (tmp_path / "refused.log").read_text()
    assert "error: the main process stopped while checking the run directory:" in out  # rank 1, told by rank 0
    assert out.count("holds an unfinished run; set train.resume=true") == 2, out
    assert seconds < 60, f"the refusal took {seconds:.0f} s"
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")) == before  # nothing touched

    # lmtune compare with launch.processes=2 finds the killed entry and continues it through torchrun
    from lmtune.compare.runner import load_compare_config, run_compare

    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))  # the launched processes import this checkout
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    compare = tmp_path / "compare.yaml"
    compare.write_text(yaml.safe_dump({"base": raw, "strategies": [{"name": "lora"}],
                                       "launch": {"processes": 2}, "output": {"dir": str(tmp_path / "compare")}}))
    result = run_compare(load_compare_config(compare, []))
    assert [row["status"] for row in result.entries] == ["done"], result.entries
    log = (tmp_path / "compare" / "lora.log").read_text()
    assert f"train.resume: continuing from {run_dir / 'checkpoints'}/checkpoint-" in log, log[-3000:]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == MAX_STEPS
    assert json.loads((run_dir / "provenance.json").read_text())["processes"] == 2
    assert [p.name for p in (tmp_path / "compare").iterdir() if p.is_dir()] == ["lora"]
    two, one = metrics["splits"]["validation"]["loss"], reference.metrics["splits"]["validation"]["loss"]
    assert abs(two - one) <= 0.02 * one, (two, one)
    assert metrics["splits"]["validation"]["rows"] == 32  # the whole validation set, not one rank's half

    # One writer: the log entries up to the checkpoint the run resumed from appear once (two writers: twice),
    # and the logged training loss is the mean over the ranks, as one process logs it (a sum would be twice)
    logged = [e for e in _entries(run_dir / "train_log.jsonl") if e["step"] <= 4]
    assert len(logged) == len({json.dumps(e, sort_keys=True) for e in logged}) == 4, logged
    loss_two = next(e["loss"] for e in logged if e["step"] == 2 and "loss" in e)
    loss_one = next(e["loss"] for e in _entries(reference.run_dir / "train_log.jsonl") if e["step"] == 2 and "loss" in e)
    # Each rank draws its own dropout masks (one process draws them for the whole batch), so the two agree to
    # dropout noise only (5.5% apart with one set of masks); a sum over the ranks would be twice the loss.
    assert abs(loss_two - loss_one) <= 0.15 * loss_one, (loss_two, loss_one)


def test_one_process_calls_the_work_without_any_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ranks.on_main(lambda: 7, "x") == 7 and ranks.main_first(lambda: 8, "x") == 8
    assert ranks.trainer_settings() == {} and ranks.is_main()
    with pytest.raises(LmtuneError, match="refused"):
        ranks.on_main(lambda: (_ for _ in ()).throw(LmtuneError("refused")), "x")
    assert not torch.distributed.is_initialized()


def test_launch_commands_are_the_ones_users_type(tmp_path):
    config = tmp_path / "c.yaml"
    torchrun = launch_command(LaunchConfig(processes=4), config, ["train.resume=true"])
    assert torchrun[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4",
                            "-m", "lmtune", "train", str(config), "train.resume=true"]
    accelerate = launch_command(LaunchConfig(processes=2, launcher="accelerate"), config)
    assert accelerate[1:4] == ["-m", "accelerate.commands.launch", "--num_processes"] and "--multi_gpu" in accelerate
    with_file = launch_command(LaunchConfig(processes=2, launcher="accelerate", args=["--config_file", "f.yaml"]), config)
    assert "--multi_gpu" not in with_file and with_file[-6:-4] == ["--config_file", "f.yaml"]


def test_fsdp_settings_reach_trainer(tiny_models, toy_data, tmp_path):
    from lmtune.models.loading import load_backbone
    from lmtune.tasks import TASKS
    from lmtune.train.runner import _training_arguments

    raw = tiny_raw_config(tiny_models["llama"], toy_data, tmp_path, {"name": "lora", "rank": 2})
    cfg = resolve(resolve_config(raw, ["train.fsdp={sharding: shard_grad_op, options: {cpu_ram_efficient_loading: true}}"]))
    assert cfg.train.fsdp == FsdpConfig(sharding="shard_grad_op", options={"cpu_ram_efficient_loading": True})
    task = TASKS.build("classification", cfg)
    model = task.build_model(load_backbone(cfg.model, task.backbone_class, 0))
    arguments = fsdp_arguments(cfg.train.fsdp, model)
    assert arguments["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]  # the base's own
    args = _training_arguments(cfg, tmp_path, loss_only=False, model=model)
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["reshard_after_forward"] is False
    assert plugin["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer" and plugin["cpu_ram_efficient_loading"]
    assert fsdp_arguments(FsdpConfig(wrap_layers=["MyBlock"]), model)["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["MyBlock"]
    assert fsdp_arguments(None, model) == {}

    class CpuTrainer:  # what Trainer looks like on CPU processes: accelerate 1.15 leaves FSDP off there
        args = type("A", (), {"world_size": 2})()
        is_fsdp_enabled = False
        accelerator = type("Acc", (), {"distributed_type": "MULTI_CPU"})()

    with pytest.raises(LmtuneError, match="FSDP runs on GPU processes only"):
        check_sharded(FsdpConfig(), CpuTrainer())
    check_sharded(None, CpuTrainer())


def test_tune_launches_each_trial_config_and_reads_its_metrics(tmp_path, tiny_models, toy_data, monkeypatch):
    """The study side of `launch.processes`: each trial's own config.yaml is what torchrun gets, the command goes
    to the trial's train.log and the run's metrics.json is the score. The launched command runs here, in this
    process (torchrun itself is exercised above), so the test costs no start-up."""
    pytest.importorskip("optuna")
    from lmtune.cli import main
    from lmtune.train import launch
    from lmtune.tune.study import run_study, validate_study

    launched, real_run = [], subprocess.run

    def run_here(command, **kwargs):
        if "lmtune" not in command:  # subprocess is one module: anything else that runs a command is left alone
            return real_run(command, **kwargs)
        launched.append(command)
        return subprocess.CompletedProcess(command, main(command[command.index("lmtune") + 1:]))

    monkeypatch.setattr(launch.subprocess, "run", run_here)
    base = tiny_raw_config(tiny_models["bert"], toy_data, tmp_path / "unused", {"name": "lora", "rank": 2},
                           max_steps=2, eval_every="no")
    result = run_study(validate_study({
        "base": base, "space": {"train.learning_rate": [1.0e-3]}, "objective": {"metric": "loss", "direction": "minimize"},
        "budget": {"trials": 1}, "algorithm": "grid", "launch": {"processes": 2}, "output": {"dir": str(tmp_path / "study")}}))
    [record] = result.records
    trial = result.folder / record.dir
    assert record.state == "complete", record.error
    [command] = launched
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert command[-2:] == ["train", str(trial / "config.yaml")]
    assert record.score == pytest.approx(json.loads((trial / "run" / "metrics.json").read_text())["loss"])
    assert "$ " + " ".join(command) in (trial / "train.log").read_text()


def test_fsdp_gathered_weights_rebuild_the_trained_model(tiny_models, toy_data, tmp_path):
    """The main process's side of FSDP after training, without the sharding (accelerate shards only on GPUs):
    the gathered trainable tensors, loaded into a freshly loaded copy, give the trained model's outputs."""
    from lmtune.methods import STRATEGIES
    from lmtune.tasks import TASKS
    from lmtune.train.fsdp import gather_trainable
    from lmtune.train.runner import _load, _unsharded_copy

    cfg = resolve(resolve_config(tiny_raw_config(tiny_models["llama"], toy_data, tmp_path, {"name": "lora", "rank": 2})))
    task, strategy = TASKS.build("classification", cfg), STRATEGIES.build("lora", cfg.method)
    splits, _, trained = _load(cfg, task, strategy)
    with torch.no_grad():
        for parameter in trained.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter))  # as if training had moved every trainable weight
    sharded = type("T", (), {"is_fsdp_enabled": True, "model": trained})()
    copy = _unsharded_copy(cfg, task, strategy, gather_trainable(sharded))
    batch = task.collator(trained.tokenizer)([task.encode(splits.validation, trained.tokenizer)[i] for i in range(4)])
    trained.eval()
    copy.eval()
    with torch.no_grad():
        assert torch.equal(trained(**batch).logits, copy(**batch).logits)
    assert gather_trainable(type("T", (), {"is_fsdp_enabled": False})()) is None


def test_fsdp_checkpoints_count_as_complete_by_accelerates_own_files(tmp_path):
    """Under FSDP the optimizer and model state for resume are accelerate's files, not optimizer.pt: a complete
    FSDP checkpoint must not be taken for a cut-short one (resume would delete it), nor one without its model state
    for a complete one."""
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    for name in ("trainer_state.json", "model.safetensors", "scheduler.pt", "rng_state.pth", "optimizer.bin"):
        (folder / name).write_text("{}")
    assert incomplete_reason(folder) == "no pytorch_model_fsdp.bin"
    (folder / "pytorch_model_fsdp_0").mkdir()  # SHARDED_STATE_DICT: a folder of shards
    assert incomplete_reason(folder) is None
    (folder / "optimizer.bin").unlink()
    assert incomplete_reason(folder) == "no optimizer.pt"
