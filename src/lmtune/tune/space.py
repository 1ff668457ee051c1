"""Search spaces over dotted run-config keys: ranges (float/int, linear or log, optional step) and choice lists.

```yaml
space:
  train.learning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}   # float: the run config's field is a float
  method.rank: [2, 4, 8, 16, 32]                                # choices
  method.alpha: {low: 4, high: 64, step: 4}                     # int: the field is an int
  train: {weight_decay: {low: 0.0, high: 0.1}}                  # nested form, the same as train.weight_decay
```

A range's type is `type:` when given, else the type of the run-config field it sets (so `{low: 0, high: 1}`
on a float field is a float range), else int when both bounds are ints.
"""

from __future__ import annotations

import copy
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from lmtune.errors import LmtuneError
from lmtune.runconfig import resolve_config

RANGE_KEYS = {"low", "high", "log", "step", "type"}


@dataclass
class Param:
    key: str
    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.key} in {self.choices}"
        scale = ", log" if self.log else ""
        step = f", step {self.step}" if self.step else ""
        return f"{self.key}: {self.kind} [{self.low}, {self.high}{scale}{step}]"

    def clip(self, value: Any) -> Any:
        """A value of the right type inside the range (rounded to the step; ints rounded)."""
        if self.kind == "categorical":
            return value
        value = min(max(float(value), self.low), self.high)
        if self.step:
            value = self.low + round((value - self.low) / self.step) * self.step
            value = min(value, self.high)
        if self.kind == "int":
            return round(value)
        return float(value)

    def grid(self) -> list[Any]:
        """Every value, for grid search: choices, or a stepped range."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step:
            count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
            return [self.clip(self.low + i * self.step) for i in range(count)]
        raise LmtuneError(
            f"grid search needs a finite set of values for {self.key}: give a list of choices or a `step`"
        )


def flatten_space(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections (`train: {learning_rate: {...}}`) → dotted keys; a mapping of range keys is a leaf."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and not set(value) & RANGE_KEYS:
            flat.update(flatten_space(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def parse_space(raw: dict[str, Any], base: dict[str, Any]) -> list[Param]:
    """Parse and check the space against the base run config: every key must exist (with "did you mean") and
    every bound and choice must validate, before any trial runs."""
    flat = flatten_space(raw)
    if not flat:
        raise LmtuneError("the study has an empty `space`; add e.g. `train.learning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}`")
    params = [_parse_param(key, value, base) for key, value in flat.items()]
    for param in params:
        values = param.choices if param.kind == "categorical" else [param.low, param.high]
        for value in values:
            check_overrides(base, {param.key: param.clip(value)}, f"space key {param.key}")
    return params


def _parse_param(key: str, value: Any, base: dict[str, Any]) -> Param:
    if isinstance(value, list):
        if not value:
            raise LmtuneError(f"space key {key}: the list of choices is empty")
        return Param(key, "categorical", choices=list(value))
    if not isinstance(value, dict) or "low" not in value or "high" not in value:
        raise LmtuneError(
            f"space key {key}: give a range {{low: ..., high: ..., log: true}} or a list of choices, not {value!r}"
        )
    unknown = set(value) - RANGE_KEYS
    if unknown:
        raise LmtuneError(f"space key {key}: unknown range option(s) {sorted(unknown)}; known: {sorted(RANGE_KEYS)}")
    low, high = value["low"], value["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise LmtuneError(f"space key {key}: low and high must be numbers (write 1.0e-5, not 1e-5, in YAML)")
    if low >= high:
        raise LmtuneError(f"space key {key}: low ({low}) must be below high ({high})")
    log = bool(value.get("log", False))
    if log and low <= 0:
        raise LmtuneError(f"space key {key}: a log range needs low > 0 (got {low})")
    kind = value.get("type") or _field_kind(key, base) or ("int" if isinstance(low, int) and isinstance(high, int) else "float")
    if kind not in ("int", "float"):
        raise LmtuneError(f"space key {key}: type must be int or float, not {kind!r}")
    step = value.get("step")
    if step is not None and (step <= 0 or (log and kind == "float")):
        raise LmtuneError(f"space key {key}: step must be > 0 and cannot be combined with log for floats")
    return Param(key, kind, float(low), float(high), log, step)


def _field_kind(key: str, base: dict[str, Any]) -> str | None:
    """int or float from the run config's annotation of the field `key` sets (None when unknown or mixed)."""
    from lmtune.config.loading import model_at
    from lmtune.runconfig import RunConfig

    parts = key.split(".")
    model = model_at(parts[:-1], base, RunConfig)
    info = model.model_fields.get(parts[-1]) if model is not None else None
    if info is None:
        return None
    args = set(typing.get_args(info.annotation)) or {info.annotation}
    if float in args:
        return "float"
    if int in args:
        return "int"
    return None


def format_value(value: Any) -> str:
    """A value as the YAML text of an override, read back as the same type (`1e-05` alone is a string in YAML)."""
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, str):
        import yaml

        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    import json

    return json.dumps(value)


def show(value: Any) -> str:
    """A value for people: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def to_overrides(params: dict[str, Any]) -> list[str]:
    return [f"{key}={format_value(value)}" for key, value in params.items()]


def check_overrides(base: dict[str, Any], params: dict[str, Any], what: str) -> None:
    try:
        resolve_config(copy.deepcopy(base), to_overrides(params))
    except LmtuneError as err:
        raise LmtuneError(f"{what}: {err}") from None


def plain(value: Any) -> Any:
    """numpy scalars → Python numbers (for YAML, JSON and Optuna)."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()
    return value
