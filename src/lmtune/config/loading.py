"""YAML file + `a.b=c` overrides → a validated RunConfig, with errors that say what to type instead."""

from __future__ import annotations

import copy
import difflib
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lmtune.config.paths import path_updates, resolve_paths
from lmtune.config.schema import RunConfig
from lmtune.errors import LmtuneError


class ConfigLoader(yaml.SafeLoader):
    """YAML as config files and overrides are read: YAML 1.2's booleans (`true`/`false` only), so the words
    `no`, `off`, `yes`, `on` stay the strings the user typed (`train.eval_every=no`). Boolean fields still accept
    them: pydantic reads "yes"/"no"/"on"/"off" as booleans."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_yaml_text(text: str) -> Any:
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass: plain data only


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """`train.learning_rate=3e-4` → (['train', 'learning_rate'], 3e-4); values are read as YAML scalars/lists."""
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise LmtuneError(f"override {item!r} is not of the form key.path=value (e.g. method.rank=16)")
        value = load_yaml_text(text) if text.strip() else None
        parsed.append((key.strip().split("."), value))
    return parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """A copy of `raw` with the overrides applied; `raw` itself is never written (compare's `base` is shared)."""
    raw = copy.deepcopy(raw)
    for path, value in parse_overrides(overrides):
        set_dotted(raw, path, value)
    return raw


def set_dotted(raw: dict, path: list[str], value: Any) -> None:
    """raw[a][b][c] = value for path [a, b, c], making the sections on the way."""
    node = raw
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(path[: i + 1])
            raise LmtuneError(f"override {'.'.join(path)}: {where} is a value, not a section")
        node = child
    node[path[-1]] = value


def with_absolute_paths(raw: dict, base_dir: str | Path) -> dict:
    """A copy of the raw run config `raw` whose relative paths are absolute against `base_dir`: what a study or a
    comparison hands to trials that may run in another working directory."""
    try:
        cfg = RunConfig.model_validate(copy.deepcopy(raw))
    except ValidationError as err:
        raise LmtuneError(explain(err, raw)) from None
    raw = copy.deepcopy(raw)
    for key, value in path_updates(cfg, base_dir).items():
        set_dotted(raw, key.split("."), value)
    return raw


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise LmtuneError(f"config file {path} does not exist; give the path of a YAML run config")
    try:
        raw = load_yaml_text(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise LmtuneError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise LmtuneError(f"config file {path} must hold a mapping (model:, data:, method:, ...), not {type(raw).__name__}")
    return raw


def resolve_config(raw: dict, overrides: list[str] | None = None, base_dir: str | Path | None = None) -> RunConfig:
    """Validate `raw` plus overrides; relative paths become absolute against `base_dir` (default: the working
    directory, where the user ran lmtune; see config/paths.py)."""
    raw = apply_overrides(dict(raw), overrides or [])
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise LmtuneError(explain(err, raw)) from None
    return resolve_paths(cfg, base_dir)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    return resolve_config(read_yaml(path) if path else {}, overrides)


def explain(err: ValidationError, raw: dict, root: type[BaseModel] = RunConfig) -> str:
    lines = ["invalid config:"]
    for item in err.errors():
        loc = [str(part) for part in item["loc"]]
        where = ".".join(loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key{_suggestion(loc, raw, root)}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)


def _suggestion(loc: list[str], raw: dict, root: type[BaseModel]) -> str:
    section = model_at(loc[:-1], raw, root)
    if section is None:
        return ""
    known = list(section.model_fields)
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{hint} Known keys here: {', '.join(known)}"


def model_at(loc: list[str], raw: dict, root: type[BaseModel] = RunConfig) -> type[BaseModel] | None:
    """The config class that validates the section at `loc` (method and task classes come from their registries)."""
    from lmtune.methods import method_config_class
    from lmtune.tasks import task_config_class

    registries = {"method": (method_config_class, "lora"), "task": (task_config_class, "classification")}
    model: type[BaseModel] = root
    node: Any = raw
    for part in loc:
        node = node.get(part, {}) if isinstance(node, dict) else {}
        if model is RunConfig and part in registries:
            config_class, default = registries[part]
            try:
                model = config_class(node.get("name", default))
            except ValueError:
                return None
            continue
        field = model.model_fields.get(part)
        annotation = _base_model_of(field.annotation) if field else None
        if annotation is None:
            return None
        model = annotation
    return model


def _base_model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _base_model_of(arg)
        if found:
            return found
    return None
