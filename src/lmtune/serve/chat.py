"""Chat requests → prompt tokens, the way each adapter was trained to read them.

An adapter from an `instruction` run is prompted with its own training template (the Alpaca prompt, or the model's
chat template) and cut at that template's stop strings, as `lmtune eval` does; the base model and PEFT adapters
from elsewhere get the model's chat template. A tokenizer without one falls back to plain "role: content" lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmtune.data.templates import Example, build_template, stop_strings
from lmtune.errors import LmtuneError
from lmtune.serve.forms import ServedAdapter

if TYPE_CHECKING:  # the engine imports this module
    from lmtune.serve.engine import Engine


def chat_prompt(engine: Engine, messages: list[dict], adapter: ServedAdapter | None) -> tuple[list[int], list[str]]:
    """(prompt token ids, stop strings the adapter's template implies)."""
    if not messages or messages[-1].get("role") != "user":
        raise LmtuneError("a chat request's last message must be the user's (role: user)")
    tokenizer = engine.tokenizer
    name = adapter.template if adapter is not None and adapter.template else None
    if name is None and not tokenizer.chat_template:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return engine.tokenize(text, add_special_tokens=False, limit=engine.prompt_limit), []
    template = build_template(name or "chat", tokenizer)
    # A template's prompt for one instruction; a chat template sees the whole conversation.
    example = Example(messages[-1]["content"], "", "", "", messages=[*messages, {"role": "assistant", "content": ""}]
                      if template.name == "chat" else None)
    try:
        text = template.prompt(example)
    except LmtuneError:
        raise
    except Exception as err:  # noqa: BLE001 - jinja errors: roles out of order, a template refusing system messages
        raise LmtuneError(f"the model's chat template refused these messages: {err}") from None
    # `limit`: a huge conversation is refused by its length before it is tokenised (Engine.tokenize).
    ids = engine.tokenize(text, add_special_tokens=template.add_special_tokens, limit=engine.prompt_limit)
    return ids, stop_strings(template)
