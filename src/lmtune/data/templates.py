"""Instruction records → (prompt, response): the record formats lmtune reads and the prompt templates it writes.

Record formats, recognised by their columns:
- `alpaca`: `{instruction, input, output, answer}` (LLM-Adapters; `input` and `answer` optional);
- `gsm8k`: `{question, answer}` where the answer's rationale ends in `#### <number>`;
- `chat`: `{messages: [{role, content}, ...]}`; the last message is the assistant's response.

Templates: `alpaca` (the LLM-Adapters paper's prompt), `chat` (the tokenizer's own chat template), `auto` (chat
where the tokenizer has a template, else alpaca).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from lmtune.errors import LmtuneError

RecordFormat = Literal["alpaca", "gsm8k", "chat"]
TemplateName = Literal["auto", "alpaca", "chat"]

ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
GSM8K_FINAL = re.compile(r"####\s*(?P<answer>[^\n]+?)\s*$")
CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations, e.g. "<<48/2=24>>"


@dataclass
class Example:
    instruction: str
    input: str
    output: str
    gold: str
    """What the generation is scored against: `answer` where given, GSM8K's final number, else the output."""
    messages: list[dict] | None = None


def record_format(columns: list[str]) -> RecordFormat:
    if "messages" in columns:
        return "chat"
    if "instruction" in columns:
        return "alpaca"
    if "question" in columns and "answer" in columns:
        return "gsm8k"
    raise LmtuneError(
        f"cannot tell the record format from the columns {columns}; instruction data needs "
        "{instruction, input?, output, answer?} (LLM-Adapters/Alpaca), {question, answer} (GSM8K) or {messages} (chat)"
    )


def to_example(row: dict, fmt: RecordFormat) -> Example:
    if fmt == "chat":
        return _chat_example(row)
    if fmt == "gsm8k":
        return _gsm8k_example(row)
    output = str(row.get("output") or "").strip()
    answer = row.get("answer")
    gold = str(answer).strip() if answer not in (None, "") else output
    return Example(str(row["instruction"]).strip(), str(row.get("input") or "").strip(), output, gold)


def _gsm8k_example(row: dict) -> Example:
    text = str(row["answer"])
    final = GSM8K_FINAL.search(text)
    if final is None:
        raise LmtuneError(f"a GSM8K-style answer must end with '#### <answer>'; got {text[-80:]!r}")
    gold = final["answer"].replace(",", "").strip()
    rationale = CALCULATOR_NOTE.sub("", text[: final.start()]).strip()
    return Example(str(row["question"]).strip(), "", f"{rationale}\nThe answer is {gold}.", gold)


def _chat_example(row: dict) -> Example:
    messages = row["messages"]
    if not messages or messages[-1].get("role") != "assistant":
        raise LmtuneError("a chat record's last message must be the assistant's response (role: assistant)")
    last = messages[-1]["content"]
    return Example(messages[-2]["content"] if len(messages) > 1 else "", "", last, last, messages=list(messages))


class PromptTemplate:
    """Renders examples for one tokenizer. `response` is the text the model learns to produce, ending with the
    end-of-turn marker where the template has one; `append_eos` says the tokenizer's EOS id must follow it."""

    name: str
    add_special_tokens: bool = True
    append_eos: bool = True

    def prompt(self, example: Example) -> str:
        raise NotImplementedError

    def response(self, example: Example) -> str:
        return example.output


class AlpacaTemplate(PromptTemplate):
    name = "alpaca"

    def prompt(self, example: Example) -> str:
        if example.messages is not None:
            raise LmtuneError("chat records need a chat template: set task.template=chat (on a model that has one)")
        if example.input:
            return ALPACA_WITH_INPUT.format(instruction=example.instruction, input=example.input)
        return ALPACA.format(instruction=example.instruction)


class ChatTemplate(PromptTemplate):
    """The model's own chat template; rendered as text that already holds its special tokens."""

    name = "chat"
    add_special_tokens = False
    append_eos = False

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise LmtuneError("task.template=chat, but this model's tokenizer has no chat template; use task.template=alpaca")
        self.tokenizer = tokenizer

    def _conversation(self, example: Example) -> list[dict]:
        if example.messages is not None:
            return example.messages[:-1]
        content = f"{example.instruction}\n\n{example.input}" if example.input else example.instruction
        return [{"role": "user", "content": content}]

    def prompt(self, example: Example) -> str:
        return self.tokenizer.apply_chat_template(self._conversation(example), add_generation_prompt=True, tokenize=False)

    def response(self, example: Example) -> str:
        # Render the whole conversation and keep what follows the prompt: the assistant turn exactly as the
        # template closes it (end-of-turn token included), whatever the template's conventions.
        prompt = self.prompt(example)
        turn = {"role": "assistant", "content": example.output}
        full = self.tokenizer.apply_chat_template([*self._conversation(example), turn], tokenize=False)
        if not full.startswith(prompt):
            raise LmtuneError("this chat template renders the prompt differently inside a conversation; use task.template=alpaca")
        return full[len(prompt):]


def stop_strings(template: PromptTemplate) -> list[str]:
    """Where a generation that runs past its answer is cut (the template's next section)."""
    return ["### Instruction:", "### Response:", "Below is an instruction"] if template.name == "alpaca" else []


def build_template(name: TemplateName, tokenizer) -> PromptTemplate:
    if name == "auto":
        name = "chat" if getattr(tokenizer, "chat_template", None) else "alpaca"
    return ChatTemplate(tokenizer) if name == "chat" else AlpacaTemplate()
