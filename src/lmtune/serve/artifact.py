"""Read one adapter folder into a `ServedAdapter`: an `lmtune train` run directory, or a PEFT-format adapter
(`adapter_config.json` + `adapter_model.safetensors`) made by PEFT or another tool. Weights load with safetensors
only; nothing is unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from safetensors.torch import load_file
from torch import nn

from lmtune.errors import LmtuneError
from lmtune.serve.forms import Head, ServedAdapter
from lmtune.serve.kinds import read_body_part, serve_kind_of

RUN_MARKERS = ("config.yaml", "provenance.json")


def is_adapter_folder(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() or all((path / m).is_file() for m in RUN_MARKERS)


def read_adapter(name: str, folder: Path, model: nn.Module, base_hash: str, base_names: set[str]) -> ServedAdapter:
    """`model` is the served base (the LM for decoders); `base_hash` its weights' sha256 (lmtune runs record theirs)."""
    if not folder.is_dir():
        raise LmtuneError(f"adapter folder {folder} does not exist")
    if all((folder / m).is_file() for m in RUN_MARKERS):
        return _read_run(name, folder, model, base_hash)
    if (folder / "adapter_config.json").is_file():
        return _read_peft(name, folder, model, base_names)
    raise LmtuneError(f"{folder} is neither an lmtune run (config.yaml, provenance.json) nor a PEFT adapter (adapter_config.json)")


def describe(folder: Path) -> tuple[str, str, str]:
    """(kind, base, method) from the folder's small config files, without loading weights (for listings)."""
    try:
        if all((folder / m).is_file() for m in RUN_MARKERS):
            base = json.loads((folder / "provenance.json").read_text())["base_model"]["id"]
            metrics = folder / "metrics.json"
            kind = json.loads(metrics.read_text()).get("serve_kind", "unknown") if metrics.is_file() else "unfinished run"
            method = (yaml.safe_load((folder / "config.yaml").read_text()).get("method") or {}).get("name", "unknown")
            return kind, base, method
        config = json.loads((folder / "adapter_config.json").read_text())
        peft_type = str(config.get("peft_type"))
        return serve_kind_of(peft_type), str(config.get("base_model_name_or_path")), peft_type
    except (OSError, ValueError, KeyError, AttributeError) as err:
        return "unreadable", "", f"{type(err).__name__}: {err}"


def _read_run(name: str, folder: Path, model: nn.Module, base_hash: str) -> ServedAdapter:
    if not (folder / "metrics.json").is_file():
        raise LmtuneError(f"{folder} is not a finished run (no metrics.json); finish it before serving it")
    provenance = json.loads((folder / "provenance.json").read_text())
    config = yaml.safe_load((folder / "config.yaml").read_text())
    base = provenance["base_model"]
    if base["weights_sha256"] != base_hash:
        raise LmtuneError(
            f"adapter {name!r} was trained on base model {base['id']!r} (weights sha256 {base['weights_sha256'][:12]}…), "
            f"not on the served base ({base_hash[:12]}…); serve it with --base {base['id']}"
        )
    serve_kind = json.loads((folder / "metrics.json").read_text()).get("serve_kind")
    if serve_kind == "full_model":
        raise LmtuneError(
            f"adapter {name!r} ({config['method']['name']}) changed the base model's own weights, so it cannot share "
            f"one base with other adapters; serve it as its own base: lmtune serve --base {folder / 'model'}"
        )
    task = config["task"]["name"]
    if task not in ("classification", "instruction", "translation"):
        raise LmtuneError(f"adapter {name!r} is a {task} run; the server serves classification and generation runs")
    body = _body_part(folder, model) if (folder / "adapter_config.json").is_file() else None
    head = None
    if (folder / "head.safetensors").is_file():
        state = load_file(str(folder / "head.safetensors"), device=str(next(model.parameters()).device))
        head = Head(state["classifier.weight"].float(), state["classifier.bias"].float(),
                    [str(label) for label in config["data"]["labels"]], base["pooling"])
    if body is None and head is None:
        raise LmtuneError(f"{folder} holds neither an adapter nor a head; nothing to serve")
    return ServedAdapter(name, folder, body, head, base["id"], config["method"]["name"],
                         max_length=config["model"].get("max_length"), template=config["task"].get("template"))


def _read_peft(name: str, folder: Path, model: nn.Module, base_names: set[str]) -> ServedAdapter:
    config = json.loads((folder / "adapter_config.json").read_text())
    body = _body_part(folder, model, config)
    stated = config.get("base_model_name_or_path") or "unknown"
    notes = []
    if stated not in base_names and Path(str(stated)).name not in {Path(n).name for n in base_names}:
        # Shapes were checked against the served model; a name cannot be, since the same weights go by many names.
        notes.append(f"made for {stated!r}; its shapes fit the served base")
    return ServedAdapter(name, folder, body, None, stated, str(config.get("peft_type")), notes)


def _body_part(folder: Path, model: nn.Module, config: dict | None = None):
    config = config or json.loads((folder / "adapter_config.json").read_text())
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise LmtuneError(f"{folder} has adapter_config.json but no adapter_model.safetensors (only safetensors load)")
    return read_body_part(config, load_file(str(weights)), model)
