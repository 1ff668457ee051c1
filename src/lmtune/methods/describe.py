"""`lmtune methods`: every registered strategy, what it trains, how it is served, and its options."""

from __future__ import annotations

from lmtune.methods.base import STRATEGIES


def describe_methods() -> str:
    lines = []
    for name, cls in sorted(STRATEGIES.all().items()):
        strategy = cls(cls.config_cls())
        lines.append(f"{name}  —  {strategy.describe()}")
        lines.append(f"    served as: {strategy.serve_kind}; default learning rate: {strategy.default_learning_rate:g}")
        if formula := strategy.parameter_formula():
            lines.append(f"    trainable parameters: {formula}")
        for field, info in cls.config_cls.model_fields.items():
            if field == "name":
                continue
            doc = " ".join((info.description or "").split())
            lines.append(f"    {field} = {info.default!r}: {doc}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
