"""YAML files and `a.b=c` overrides → raw config dicts, and validation errors that say what to type instead.

Generic over the config class: `lmtune.runconfig` applies it to RunConfig, tune and compare to their own.
"""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lmtune.config.schema import set_dotted
from lmtune.errors import LmtuneError, did_you_mean

__all__ = ["ConfigLoader", "apply_overrides", "explain", "load_yaml_text", "model_at", "parse_overrides",
           "read_yaml", "set_dotted", "walk"]


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


def explain(err: ValidationError, raw: dict, root: type[BaseModel]) -> str:
    """A validation error as lines a user can act on: where (dotted), what, and for unknown keys the known ones."""
    lines = ["invalid config:"]
    for item in err.errors():
        loc, model = walk([str(part) for part in item["loc"]], raw, root)
        where = ".".join(loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key{_suggestion(loc[-1], model)}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)


def _suggestion(key: str, section: type[BaseModel] | None) -> str:
    if section is None:
        return ""
    known = list(section.model_fields)
    suggestion = did_you_mean(key, known)
    return f"; {suggestion} Known keys here: {', '.join(known)}" if suggestion else f". Known keys here: {', '.join(known)}"


def model_at(loc: list[str], raw: dict, root: type[BaseModel]) -> type[BaseModel] | None:
    """The config class that validates the section at dotted `loc` of `raw` (for a union section such as
    `method`, the member its `name` picks)."""
    _, model = walk(loc + ["*"], raw, root)
    return model


def walk(loc: list[str], raw: dict, root: type[BaseModel]) -> tuple[list[str], type[BaseModel] | None]:
    """Follow an error location down the config classes: the location as the user wrote it (pydantic adds a
    discriminated union's tag, `method.lora.rank`; the user wrote `method.rank`) and the class of the section
    holding its last key (None where the path leaves the config classes)."""
    shown: list[str] = []
    model: type[BaseModel] | None = root
    node: Any = raw
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        shown.append(part)
        field = model.model_fields.get(part) if model is not None and parts else None
        if field is None:
            if parts:
                model = None
            continue
        node = node.get(part, {}) if isinstance(node, dict) else {}
        members = _union_members(field)
        if members:
            tag = node.get(field.discriminator, _default_tag(field)) if isinstance(node, dict) else None
            if parts and parts[0] in members:  # pydantic's tag in the location
                tag = parts.pop(0)
            model = members.get(tag)
        else:
            model = _base_model_of(field.annotation)
    return shown, model


def _union_members(field) -> dict[str, type[BaseModel]]:
    """Tag → class for a field that is a union discriminated by a literal `name`."""
    if not field.discriminator:
        return {}
    members = {}
    for cls in typing.get_args(field.annotation):
        literal = cls.model_fields[field.discriminator].annotation
        for tag in typing.get_args(literal):
            members[tag] = cls
    return members


def _default_tag(field) -> str | None:
    default = field.get_default(call_default_factory=True)
    return getattr(default, field.discriminator, None)


def _base_model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _base_model_of(arg)
        if found:
            return found
    return None
