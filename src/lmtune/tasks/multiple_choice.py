"""Multiple choice scored by log-likelihood, the way lm-evaluation-harness scores it: every choice is a
continuation of the question, its summed token log-probability is its score, the highest wins (`accuracy`, the
harness's `acc`); `accuracy_norm` (`acc_norm`) divides each score by the choice's length in characters, as the
harness does.

Training ranks the choices too (`task.loss: choice`: cross-entropy over the choices' summed log-likelihoods), or
learns the gold answer as text (`task.loss: lm`: the language-model loss on the gold continuation only). Both run
through the same forward, so every strategy trains with either: the body is the pretrained causal LM (PEFT wraps
it as CAUSAL_LM) and the scores come from its logits. Prompt methods prepend virtual positions to the logits; the
last `input length` positions are the text's, whatever the strategy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

import datasets
import numpy as np
import torch
from pydantic import Field
from transformers.utils import ModelOutput

from lmtune.config.schema import TaskConfig
from lmtune.data.choices import ChoiceItem, Columns, Layout, choice_items
from lmtune.data.sources import read_split
from lmtune.data.splits import Splits
from lmtune.errors import LmtuneError
from lmtune.evaluate.choices import ScoredRows, choice_logprobs, pad_right, score_rows
from lmtune.forms import form_of_body
from lmtune.tasks.base import Task, TaskModel, register_task

PLAIN_TEMPLATE = "Question: {question}\nAnswer:"
LAYOUT_TEMPLATES = {"hellaswag": "{question}"}  # the harness reads HellaSwag's context as it is


class MultipleChoiceConfig(TaskConfig):
    name: Literal["multiple_choice"] = "multiple_choice"
    """A question and a list of choices; the model's log-likelihood of each choice picks the answer."""
    layout: Layout = "auto"
    """How records hold the choices: `columns` (question_column, choices_column, answer_column), `llm_adapters`
    (options listed in the instruction), or the hub layouts `arc`, `hellaswag`, `piqa`, `winogrande`; `auto`
    reads the columns."""
    question_column: str = "question"
    """`columns` layout: the question."""
    choices_column: str = "choices"
    """`columns` layout: the list of choices."""
    answer_column: str = "answer"
    """`columns` layout: the answer, as an index, a letter (A, B, ...) or the choice's text."""
    template: str | None = None
    """What the model reads before a choice: a format string with `{question}`, or `chat` (the model's chat template,
    the choice as the assistant's reply). None: `Question: {question}\\nAnswer:` (the harness's ARC/PIQA prompt;
    HellaSwag's context as it is). Blank-filling sentences (WinoGrande) are read as they are."""
    shots: int = Field(0, ge=0)
    """Worked examples (question and gold answer) from the training split before every question, the same for all
    (seeded by train.seed)."""
    loss: Literal["choice", "lm"] = "choice"
    """What training minimises: `choice`, cross-entropy over the choices' summed log-likelihoods (the model learns
    to rank the gold choice first, which is what is scored); `lm`, the language-model loss on the gold choice's
    tokens only (other choices are not seen in training)."""


class ChoiceModel(TaskModel):
    """The whole causal LM as the body, no head: scores are log-likelihoods of choices."""

    peft_task_type = "CAUSAL_LM"

    def __init__(self, backbone, loss: str):
        super().__init__(backbone)
        self.loss_kind = loss

    def forward(self, input_ids=None, attention_mask=None, target_mask=None, example_index=None, choice_slot=None,
                labels=None, gold_row=None, num_choices=None, **_: Any):
        if self.training and self.loss_kind == "lm":  # the other choices do not enter the loss: skip their forward
            keep = gold_row.bool()
            input_ids, attention_mask, target_mask = input_ids[keep], attention_mask[keep], target_mask[keep]
            sums, counts = choice_logprobs(self.body, input_ids, attention_mask, target_mask)
            return ModelOutput(loss=-sums.sum() / counts.sum().clamp(min=1))
        sums, counts = choice_logprobs(self.body, input_ids, attention_mask, target_mask)
        scores = sums.new_full((int(example_index.max()) + 1, int(num_choices[0])), -1e9)
        scores[example_index, choice_slot] = sums
        if labels is None:
            return ModelOutput(logits=scores)
        if self.loss_kind == "lm":  # evaluation under the lm loss: the gold continuation's mean token loss
            gold = gold_row.bool()
            loss = -sums[gold].sum() / counts[gold].sum().clamp(min=1)
        else:
            loss = torch.nn.functional.cross_entropy(scores, labels)
        return ModelOutput(loss=loss, logits=scores)


@dataclass
class EncodedChoice:
    input_ids: list[int]
    target_mask: list[int]
    truncated: bool


@register_task
class MultipleChoiceTask(Task):
    name = "multiple_choice"
    config_cls = MultipleChoiceConfig
    summary = "pick one of several choices by the model's log-likelihood of each (lm-evaluation-harness scoring)"
    backbone_class = "AutoModelForCausalLM"
    default_max_length = 256
    default_metric = "accuracy"
    checkpoint_metrics = ("accuracy", "loss")
    headline_metric = "accuracy"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.max_choices = 2
        self.demonstrations: list[ChoiceItem] = []

    # ---- data -------------------------------------------------------------------------------------------------

    def items(self, table) -> list[ChoiceItem]:
        task = self.cfg.task
        columns = Columns(task.question_column, task.choices_column, task.answer_column)
        return choice_items(list(table), task.layout, columns)

    def load_data(self) -> Splits:
        data, seed = self.cfg.data, self.cfg.train.seed
        train = read_split(data, "train")
        if train is None:
            raise LmtuneError("no training data: set data.train (a multiple-choice file; see task.layout)")
        validation, test = read_split(data, "validation"), read_split(data, "test")
        # Each file is parsed once, here: layout errors surface now, not after training.
        parsed = [self.items(table) for table in (train, validation, test) if table is not None]
        if any(item.gold is None for item in parsed[0]):
            raise LmtuneError("every training row needs its answer (task.answer_column, or the layout's answer field)")
        self.max_choices = max(self.max_choices_of(items) for items in parsed)
        if data.max_train_samples and data.max_train_samples < len(train):
            train = train.shuffle(seed=seed).select(range(data.max_train_samples))
        if validation is None:
            parts = train.train_test_split(test_size=data.validation_fraction, seed=seed)
            train, validation = parts["train"], parts["test"]
        splits = Splits(train, self._limited(validation), self._limited(test))
        if self.cfg.task.shots:
            self.demonstrations = self._demonstrations(self.items(splits.train))
        return splits

    def _limited(self, table):
        limit = self.cfg.data.max_eval_samples
        return table.select(range(min(limit, len(table)))) if table is not None and limit else table

    def use_demonstrations(self, table, rows: list[int]) -> None:
        """Put these rows of `table` (question and gold answer) before every question (k-shot prompting)."""
        items = self.items(table)
        self.demonstrations = [items[i] for i in rows]

    def _demonstrations(self, train_items: list[ChoiceItem]) -> list[ChoiceItem]:
        shots = self.cfg.task.shots
        if shots > len(train_items):
            raise LmtuneError(f"task.shots={shots}, but the training data has only {len(train_items)} rows")
        return [train_items[i] for i in random.Random(self.cfg.train.seed).sample(range(len(train_items)), shots)]

    # ---- prompts and features ---------------------------------------------------------------------------------

    def contexts(self, item: ChoiceItem, tokenizer) -> list[str]:
        """What the model reads before each choice: demonstrations, then the question in the template."""
        prefix = "".join(self._context(d, d.gold, tokenizer) + d.continuations[d.gold] + "\n\n" for d in self.demonstrations)
        return [prefix + self._context(item, i, tokenizer) for i in range(len(item.continuations))]

    def _context(self, item: ChoiceItem, choice: int, tokenizer) -> str:
        if item.fills_blank:
            return item.contexts[choice]
        template = self.cfg.task.template or LAYOUT_TEMPLATES.get(self.cfg.task.layout, PLAIN_TEMPLATE)
        if template == "chat":
            if not getattr(tokenizer, "chat_template", None):
                raise LmtuneError("task.template=chat, but this model's tokenizer has no chat template; use a format string")
            return tokenizer.apply_chat_template([{"role": "user", "content": item.contexts[choice]}], tokenize=False,
                                                 add_generation_prompt=True)
        return template.format(question=item.contexts[choice])

    def continuations(self, item: ChoiceItem) -> list[str]:
        # In a chat the answer opens the assistant's turn: no space before it.
        return [c.lstrip() for c in item.continuations] if self.cfg.task.template == "chat" else item.continuations

    def encode_pair(self, context: str, continuation: str, tokenizer) -> EncodedChoice:
        """lm-evaluation-harness's split: trailing spaces of the context move to the continuation, and the
        continuation's tokens are those of (context + continuation) past the context's own, so a word boundary
        tokenises as in running text. Too long: the context loses its start, the continuation is kept."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
        target = tokenizer(context + continuation, add_special_tokens=False)["input_ids"][len(context_ids):]
        if not context_ids or not target:
            raise LmtuneError(f"a choice has an empty {'context' if not context_ids else 'continuation'}: {context!r} / {continuation!r}")
        limit = self.cfg.model.max_length
        ids = (context_ids + target)[-limit:]
        kept = min(len(target), len(ids) - 1)
        return EncodedChoice(ids, [0] * (len(ids) - kept) + [1] * kept, len(context_ids) + len(target) > limit)

    def encode(self, table, tokenizer):
        rows = []
        for item in self.items(table):
            pairs = self.encoded_choices(item, tokenizer)
            rows.append({"input_ids": [p.input_ids for p in pairs], "target_mask": [p.target_mask for p in pairs],
                         "labels": -100 if item.gold is None else item.gold})
        return datasets.Dataset.from_list(rows)

    def encoded_choices(self, item: ChoiceItem, tokenizer) -> list[EncodedChoice]:
        """One encoded (context, continuation) row per choice of `item`."""
        return [self.encode_pair(c, t, tokenizer) for c, t in zip(self.contexts(item, tokenizer), self.continuations(item))]

    def scoring_rows(self, items: list[ChoiceItem], tokenizer) -> tuple[list[EncodedChoice], list[tuple[int, int, int]]]:
        """Every choice of every item as a row, and its owner: (item, choice, its acc_norm length). The harness divides
        by the choice's own text, not the space the template puts before it (`len(choice)`)."""
        rows, owners = [], []
        for n, item in enumerate(items):
            rows += self.encoded_choices(item, tokenizer)
            owners += [(n, i, len(t.lstrip())) for i, t in enumerate(self.continuations(item))]
        return rows, owners

    def collator(self, tokenizer):
        return ChoiceCollator(pad_id(tokenizer), self.max_choices)

    # ---- model, metrics, evaluation ---------------------------------------------------------------------------

    def build_model(self, backbone) -> ChoiceModel:
        if backbone.kind != "decoder":
            raise LmtuneError(
                f"the multiple_choice task scores each choice as a continuation: it needs a decoder (causal LM, e.g. "
                f"smollm2); {backbone.model_id} is {backbone.kind} ({backbone.body.config.model_type}). For an encoder, "
                "phrase the set as classification of (question, choice) pairs")
        return ChoiceModel(backbone, self.cfg.task.loss)

    def compute_metrics(self, logits, label_ids) -> dict[str, Any]:
        scores, gold = np.asarray(logits), np.asarray(label_ids)
        return {"accuracy": float((scores.argmax(-1) == gold).mean())}

    def evaluate(self, model: TaskModel, table, batch_size: int, quick: bool = False) -> dict[str, Any]:
        items = self.items(table)
        scored = self.score(model, items, batch_size)
        labelled = [i for i, item in enumerate(items) if item.gold is not None]
        metrics: dict[str, Any] = {"rows": len(items)}
        if labelled:
            gold = np.array([items[i].gold for i in labelled])
            metrics["accuracy"] = float((scored.best(normalised=False)[labelled] == gold).mean())
            metrics["accuracy_norm"] = float((scored.best(normalised=True)[labelled] == gold).mean())
            metrics["loss"] = scored.loss(labelled, gold, self.cfg.task.loss)
            metrics["majority_class"] = float(np.bincount(gold).max() / len(gold))
        metrics["predictions"] = self.predictions(items, scored)
        return metrics

    def score(self, model: TaskModel, items: list[ChoiceItem], batch_size: int) -> ScoredRows:
        rows, owners = self.scoring_rows(items, model.tokenizer)
        return score_rows(model.body, rows, owners, len(items), self.max_choices_of(items), pad_id(model.tokenizer),
                          batch_size, progress=self.cfg.train.show_progress(), share_context=self.shares_context(model.body))

    @staticmethod
    def shares_context(body) -> bool:
        """Whether a question's context may run once with its choices continuing from the KV cache: where the
        adapter's form decodes exactly with the cache (weights and module deltas; soft prompts and prefixes take
        full rows)."""
        return form_of_body(body).decode == "cached"

    @staticmethod
    def max_choices_of(items: list[ChoiceItem]) -> int:
        return max(len(i.continuations) for i in items)

    @staticmethod
    def predictions(items: list[ChoiceItem], scored: ScoredRows) -> list[dict[str, Any]]:
        """What a person reads per question: each choice's log-likelihood and probability, both picks, the gold."""
        best, best_norm = scored.best(normalised=False), scored.best(normalised=True)
        shown = []
        for n, item in enumerate(items):
            loglik = scored.sums[n, :len(item.continuations)]
            probs = np.exp(loglik - loglik.max())
            shown.append({"question": item.question, "choices": item.choices,
                          "loglikelihood": [round(float(x), 4) for x in loglik],
                          "probabilities": [round(float(p), 4) for p in probs / probs.sum()],
                          "prediction": int(best[n]), "prediction_norm": int(best_norm[n]), "gold": item.gold})
        return shown

    def predict(self, model: TaskModel, rows: list[dict]) -> list[dict]:
        # The layout is read from the rows: `--text/--pair` rows are columns even for a run trained on another layout.
        task = self.cfg.task
        items = choice_items(rows, "auto", Columns(task.question_column, task.choices_column, task.answer_column))
        return self.predictions(items, self.score(model, items, self.cfg.eval.batch_size))

    def row_from_text(self, text: str, pair: str | None = None) -> dict:
        if pair is None:
            raise LmtuneError("multiple choice needs the choices: --text 'question' --pair 'choice one|choice two|...'")
        return {self.cfg.task.question_column: text, self.cfg.task.choices_column: pair.split("|")}


def pad_id(tokenizer) -> int:
    """The id rows are padded with (decoders often have no pad token: their end-of-text one does)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


class ChoiceCollator:
    """Questions → one row per (question, choice), right-padded (prompt methods put their virtual tokens in front,
    so padding must come last), with the bookkeeping that turns row scores back into a [questions, choices] table."""

    def __init__(self, pad_token_id: int, max_choices: int):
        self.pad, self.max_choices = pad_token_id, max_choices

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows = [(n, i, ids, mask, f["labels"]) for n, f in enumerate(features)
                for i, (ids, mask) in enumerate(zip(f["input_ids"], f["target_mask"]))]
        input_ids, attention_mask, target_mask = pad_right([r[2] for r in rows], [r[3] for r in rows], self.pad)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "target_mask": target_mask,
            "example_index": torch.tensor([n for n, *_ in rows]),
            "choice_slot": torch.tensor([i for _, i, *_ in rows]),
            "gold_row": torch.tensor([int(i == gold) for _, i, _, _, gold in rows]),
            "num_choices": torch.full((len(rows),), self.max_choices),
            "labels": torch.tensor([f["labels"] for f in features]),
        }
        return batch
