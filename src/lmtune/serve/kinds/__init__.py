"""One file per serving kind: how a PEFT-format adapter becomes a serving form, and how it applies per row.

Readers register by PEFT type with `@register_kind`, only for types a strategy declares a servable form for
(`lmtune.forms`); the artifact reader and the engine never ask which kind they hold.
Written here rather than taken from PEFT because PEFT applies one adapter type per model: its `adapter_names`
routes rows only between LoRA-family adapters, one sub-batch at a time (shared/NOTES.md).
"""

from lmtune.serve.kinds import bottleneck, ia3, kv_prefix, lora, soft_prompt  # noqa: F401  (registration)
from lmtune.serve.kinds.base import READERS, KindReader, read_body_part, register_kind, serve_kind_of

__all__ = ["READERS", "KindReader", "read_body_part", "register_kind", "serve_kind_of"]
