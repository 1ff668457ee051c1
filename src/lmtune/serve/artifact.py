"""Read one adapter folder into a `ServedAdapter`: an `lmtune train` run directory, or a PEFT-format adapter
(`adapter_config.json` + `adapter_model.safetensors`) made by PEFT or another tool. Weights load with safetensors
only; nothing is unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from lmtune.device import model_device
from lmtune.errors import LmtuneError
from lmtune.forms import FULL_MODEL, form_named, peft_form
from lmtune.models.pooling import head_layers
from lmtune.serve.forms import Head, ServedAdapter
from lmtune.serve.kinds import READERS, read_body_part, serve_kind_of
from lmtune.tasks.classification import ClassificationHead

RUN_MARKERS = ("config.yaml", "provenance.json")
READ_FILES = ("adapter_config.json", "adapter_model.safetensors", "head.safetensors", *RUN_MARKERS, "metrics.json")
"""Every file the server opens in an adapter folder."""


def is_adapter_folder(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() or all((path / m).is_file() for m in RUN_MARKERS)


def read_adapter(name: str, folder: Path, model: nn.Module, base_hash: str, base_names: set[str],
                 root: Path | None = None) -> ServedAdapter:
    """`model` is the served base (the LM for decoders); `base_hash` its weights' sha256 (lmtune runs record theirs).
    With `root`, every file read must lie under it once links are followed. Every way a file can be broken is an
    LmtuneError naming the file and the cause (the HTTP layer answers 400)."""
    if not folder.is_dir():
        raise LmtuneError(f"adapter {name!r}: its folder does not exist")
    if root is not None:
        check_inside(folder, root, name)
    if all((folder / m).is_file() for m in RUN_MARKERS):
        return _read_run(name, folder, model, base_hash)
    if (folder / "adapter_config.json").is_file():
        return _read_peft(name, folder, model, base_names)
    raise LmtuneError(f"adapter {name!r} is neither an lmtune run (config.yaml, provenance.json) nor a PEFT adapter "
                      "(adapter_config.json)")


def check_inside(folder: Path, root: Path, name: str) -> None:
    """The folder and every file the server reads in it resolve under `root` (a link out of the root is refused,
    as a path out of it is)."""
    root = root.resolve()
    for path in [folder, *(folder / f for f in READ_FILES if (folder / f).exists())]:
        resolved = path.resolve()
        if resolved != root and root not in resolved.parents:
            shown = path.name if path != folder else "its folder"
            raise LmtuneError(f"adapter {name!r}: {shown} links outside the adapter root; refused (copy the files "
                              "into the root instead of linking them)")


def read_json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise LmtuneError(f"{path.name} is not readable JSON ({_reason(err)})") from None
    if not isinstance(value, dict):
        raise LmtuneError(f"{path.name} must hold a JSON object, not a {type(value).__name__}")
    return value


def _reason(err: Exception) -> str:
    """The cause without the server's paths (an OSError's text names the absolute file)."""
    return f"{type(err).__name__}: {err.strerror}" if isinstance(err, OSError) else f"{type(err).__name__}: {err}"


def read_yaml_mapping(path: Path) -> dict:
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise LmtuneError(f"{path.name} is not readable YAML ({type(err).__name__})") from None
    if not isinstance(value, dict):
        raise LmtuneError(f"{path.name} must hold a mapping, not a {type(value).__name__}")
    return value


def read_tensors(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, all finite. A pickle under this name, a truncated file or a header that
    claims gigabytes is refused by safetensors itself; its reason is passed on."""
    try:
        tensors = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise LmtuneError(f"{path.name} is not a valid safetensors file ({_reason(err)}); re-export the adapter "
                          "(only safetensors load, never pickle)") from None
    broken = next((key for key, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()), None)
    if broken is not None:
        raise LmtuneError(f"{path.name}: tensor {broken!r} holds NaN or infinite values; the adapter is broken "
                          "(retrain it, e.g. with a lower learning rate)")
    return tensors


def describe(folder: Path) -> tuple[str, str, str, list[str] | None]:
    """(kind, base, method, labels) from the folder's small config files, without loading weights (for listings:
    a classification run's labels show before its first use, so clients such as the playground know to classify)."""
    try:
        if all((folder / m).is_file() for m in RUN_MARKERS):
            base = read_json_object(folder / "provenance.json")["base_model"]["id"]
            metrics = folder / "metrics.json"
            kind = json.loads(metrics.read_text()).get("serve_kind", "unknown") if metrics.is_file() else "unfinished run"
            config = yaml.safe_load((folder / "config.yaml").read_text())
            method = (config.get("method") or {}).get("name", "unknown")
            labels = (config.get("data") or {}).get("labels") if (folder / "head.safetensors").is_file() else None
            return kind, base, method, [str(label) for label in labels] if isinstance(labels, list) else None
        config = read_json_object(folder / "adapter_config.json")
        peft_type = str(config.get("peft_type"))
        return serve_kind_of(peft_type), str(config.get("base_model_name_or_path")), peft_type, None
    except (OSError, ValueError, KeyError, AttributeError, TypeError, LmtuneError) as err:
        return "unreadable", "", f"{type(err).__name__}: {err}", None


def _read_run(name: str, folder: Path, model: nn.Module, base_hash: str) -> ServedAdapter:
    if not (folder / "metrics.json").is_file():
        raise LmtuneError(f"adapter {name!r} is not a finished run (no metrics.json); finish it before serving it")
    try:
        return _read_run_files(name, folder, model, base_hash)
    except (KeyError, TypeError, AttributeError) as err:  # a field missing or of the wrong type
        raise LmtuneError(f"adapter {name!r}: its run files are incomplete ({type(err).__name__}: {err}); "
                          "was it written by lmtune train?") from None


def _read_run_files(name: str, folder: Path, model: nn.Module, base_hash: str) -> ServedAdapter:
    provenance = read_json_object(folder / "provenance.json")
    config = read_yaml_mapping(folder / "config.yaml")
    base = provenance["base_model"]
    if base["weights_sha256"] != base_hash:
        raise LmtuneError(
            f"adapter {name!r} was trained on base model {base['id']!r} (weights sha256 {base['weights_sha256'][:12]}…), "
            f"not on the served base ({base_hash[:12]}…); serve it with --base {base['id']}"
        )
    form = form_named(str(read_json_object(folder / "metrics.json").get("serve_kind")))
    if form is FULL_MODEL:
        raise LmtuneError(
            f"adapter {name!r} ({config['method']['name']}) changed the base model's own weights, so it cannot share "
            f"one base with other adapters; serve it as its own base: lmtune serve --base ROOT/{name}/model"
        )
    if not form.shares_base:
        raise LmtuneError(
            f"adapter {name!r} ({_adapter_type(folder, config)}) cannot be served: the server applies per row only "
            f"{', '.join(READERS.names())} adapters and heads; merge it into the base model (PEFT's "
            "merge_and_unload) and serve that as its own base"
        )
    task = config["task"]["name"]
    if task not in ("classification", "instruction", "translation"):
        raise LmtuneError(f"adapter {name!r} is a {task} run; the server serves classification and generation runs")
    body = _body_part(folder, model) if (folder / "adapter_config.json").is_file() else None
    head = None
    if (folder / "head.safetensors").is_file():
        # Runs saved before model.pooling_layers existed read the last layer alone (as rundir._migrated says).
        layers = head_layers(model.config, config["model"].get("pooling_layers", 1))
        head = _read_head(folder, [str(label) for label in config["data"]["labels"]], base["pooling"], layers, model)
    if body is None and head is None:
        raise LmtuneError(f"adapter {name!r} holds neither an adapter nor a head; nothing to serve")
    return ServedAdapter(name, folder, body, head, base["id"], config["method"]["name"], form,
                         max_length=config["model"].get("max_length"), template=config["task"].get("template"))


def _read_peft(name: str, folder: Path, model: nn.Module, base_names: set[str]) -> ServedAdapter:
    config = read_json_object(folder / "adapter_config.json")
    body = _body_part(folder, model, config)
    stated = config.get("base_model_name_or_path") or "unknown"
    notes = []
    if stated not in base_names and Path(str(stated)).name not in {Path(n).name for n in base_names}:
        # Shapes were checked against the served model; a name cannot be, since the same weights go by many names.
        notes.append(f"made for {stated!r}; its shapes fit the served base")
    peft_type = str(config.get("peft_type"))
    return ServedAdapter(name, folder, body, None, stated, peft_type, peft_form(peft_type), notes)


def _adapter_type(folder: Path, config: dict) -> str:
    """What the run trained, as its PEFT config names it where it has one (the strategy's name says less)."""
    if (folder / "adapter_config.json").is_file():
        return f"PEFT type {read_json_object(folder / 'adapter_config.json').get('peft_type')}"
    return str(config["method"]["name"])


def _read_head(folder: Path, labels: list[str], pooling: str, layers: int, model: nn.Module) -> Head:
    """The head the classification task builds, filled from its own file (the file's names are the task's), then
    read as what it is: one linear map on the pooled body."""
    head = ClassificationHead(model.config.hidden_size, len(labels), pooling, layers=layers).to(model_device(model))
    try:
        head.load_state_dict(read_tensors(folder / "head.safetensors"))
    except RuntimeError as err:
        raise LmtuneError(f"head.safetensors does not fit a {len(labels)}-label head on the served base "
                          f"({' '.join(str(err).split())[:300]})") from None
    linear = next(module for module in head.modules() if isinstance(module, nn.Linear))
    return Head(linear.weight.detach().float(), linear.bias.detach().float(), labels, pooling, layers)


def _body_part(folder: Path, model: nn.Module, config: dict | None = None):
    config = config or read_json_object(folder / "adapter_config.json")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise LmtuneError("the folder has adapter_config.json but no adapter_model.safetensors (only safetensors load)")
    return read_body_part(config, read_tensors(weights), model)
