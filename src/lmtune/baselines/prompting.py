"""The untuned pretrained model, prompted zero-shot or with k worked examples: what the model knows before any
fine-tuning. Nothing trains.

- classification: a decoder LM scores each label's word after the prompt (label-word scoring); the softmax over
  the label scores gives the probabilities. An encoder picks the label nearest in embedding space instead
  (`similarity.py`: the label word zero-shot, the label's demonstrations with k shots).
- generative tasks (instruction, translation) and multiple choice: the task's own prompts and evaluation, the
  demonstrations (if any) prepended to every prompt (`Task.use_demonstrations`); multiple choice scores each
  choice's log-likelihood, as lm-evaluation-harness does.
- token classification: refused; a tag per word is no prompt completion.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from lmtune.baselines.base import (
    Baseline,
    BaselineConfig,
    evaluation_splits,
    register_baseline,
)
from lmtune.device import place, to_model_device
from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import classification_metrics
from lmtune.evaluate.predictions import take_predictions
from lmtune.runconfig import RunConfig
from lmtune.tasks.classification import ClassificationTask
from lmtune.tasks.generative import GenerativeTask
from lmtune.tasks.multiple_choice import MultipleChoiceTask
from lmtune.train.memory import PeakMemory


class PromptingConfig(BaselineConfig):
    name: Literal["prompting"] = "prompting"
    """The untuned model prompted (classification needs a decoder such as smollm2); nothing trains."""
    shots: int = Field(0, ge=0)
    """Worked examples from the training data before each input (one seeded sample shared by every input, so
    scores differ by input, not by the luck of the draw); 0: zero-shot. Each example adds model.max_length tokens
    to the length budget."""
    seed: int | None = None
    """Seeds the choice of examples; none takes train.seed."""
    template: str = "{text}\nQuestion: {labels}?\nAnswer: {label}"
    """Classification prompt: `{text}` is the input (with a pair: the two texts on two lines, unless the template
    places `{pair}` itself), `{labels}` the label words as a choice ("negative, neutral or positive"), `{label}`
    the label's word; what precedes `{label}` is the prompt the words are scored after. Naming the choices helps
    small models a lot. Generative tasks use task.template instead."""
    verbalizers: dict[str, str] | None = None
    """Label → the word that stands for it in the prompt (e.g. {pos: great, neg: terrible}); labels left out
    stand for themselves."""
    score: Literal["mean", "sum"] = "mean"
    """A label's score: the `mean` log-likelihood of its word's tokens (fair between words of different token
    counts) or their `sum` (the word's log-probability, which favours short words)."""

    @field_validator("template")
    @classmethod
    def _slots(cls, value: str) -> str:
        for slot in ("{text}", "{label}"):
            if value.count(slot) != 1:
                raise ValueError(f"the template needs {slot} exactly once, e.g. '{{text}}\\nAnswer: {{label}}'")
        if any(slot in value and value.index("{label}") < value.index(slot) for slot in ("{text}", "{pair}", "{labels}")):
            raise ValueError("the template must place {label} last: the label word is scored after the input")
        return value


@register_baseline
class Prompting(Baseline):
    name = "prompting"
    config_cls = PromptingConfig
    summary = "the untuned model prompted zero- or few-shot; nothing trains"

    def check_task(self, task) -> None:
        if not issubclass(task, (ClassificationTask, GenerativeTask, MultipleChoiceTask)):
            raise LmtuneError(
                f"the prompting baseline does not apply to the {task.name} task (a tag per word is no prompt "
                "completion); it works for classification, multiple_choice, instruction and translation"
            )

    def run(self, run_cfg: RunConfig, out_dir: Path) -> dict[str, Any]:
        cfg, task, splits = self.prepare(run_cfg, out_dir)
        cfg = cfg.updated({"model.max_length": cfg.model.max_length * (self.cfg.shots + 1)})  # a budget per demonstration
        self.write_config(cfg, out_dir)
        with PeakMemory() as peak:
            started = time.perf_counter()
            evaluate = self._classify if isinstance(task, ClassificationTask) else self._untuned
            by_split, total_params, details = evaluate(cfg, task, splits, Path(out_dir))
            details["eval_seconds"] = round(time.perf_counter() - started, 2)
        return self.finish(out_dir, by_split, trainable_params=0, total_params=total_params, artifact_bytes=0,
                           train_seconds=0.0, peak_rss_mb=peak.mb, **details)

    def sample(self, cfg: RunConfig, count: int) -> list[int]:
        """Indices of `shots` training rows, seeded."""
        if self.cfg.shots > count:
            raise LmtuneError(f"shots={self.cfg.shots}, but the training data has only {count} rows; lower shots")
        return random.Random(cfg.train.seed if self.cfg.seed is None else self.cfg.seed).sample(range(count), self.cfg.shots)

    def prompts(self, cfg: RunConfig, labels: list[str], train_table) -> LabelPrompts:
        if "{pair}" in self.cfg.template and not cfg.data.text_pair_column:
            raise LmtuneError("the prompting template places {pair}, but the data has no pairs (data.text_pair_column)")
        rows = [train_table[i] for i in self.sample(cfg, len(train_table))]
        demos = [(row_text(cfg, row), str(row[cfg.data.label_column])) for row in rows]
        return LabelPrompts(self.cfg.template, labels, self.cfg.verbalizers or {}, demos)

    def _classify(self, cfg: RunConfig, task: ClassificationTask, splits, out_dir: Path):
        from lmtune.models.loading import load_backbone

        prompts = self.prompts(cfg, task.labels, splits.train)
        decoder = is_decoder(cfg)
        backbone = load_backbone(cfg.model, "AutoModelForCausalLM" if decoder else "AutoModel", cfg.train.seed)
        place(backbone.body.eval())
        score = self._label_word_scores if decoder else self._similarity_scores
        by_split, truncated = {}, 0
        for split, table in evaluation_splits(splits).items():
            scores, cut = score(cfg, backbone, prompts, [row_text(cfg, row) for row in table])
            by_split[split] = split_metrics(scores, task.labels, table[cfg.data.label_column])
            truncated += cut
        total = sum(p.numel() for p in {id(p): p for p in backbone.body.parameters()}.values())  # tied weights once
        method = "label-word scoring" if decoder else "embedding similarity"
        return by_split, total, {"truncated_prompts": truncated, "verbalizers": prompts.words, "scored_by": method}

    def _label_word_scores(self, cfg: RunConfig, backbone, prompts: LabelPrompts, rows: list[dict]):
        return label_scores(backbone, prompts, rows, cfg.model.max_length, self.cfg.score, cfg.eval.batch_size)

    def _similarity_scores(self, cfg: RunConfig, backbone, prompts: LabelPrompts, rows: list[dict]):
        from lmtune.baselines.similarity import prototypes, similarity_scores

        length = cfg.model.max_length // (self.cfg.shots + 1)  # undo the k-shot budget: one text at a time here
        centres = prototypes(backbone, prompts.labels, prompts.words, prompts.demonstrations, length, cfg.eval.batch_size)
        return similarity_scores(backbone, centres, rows, length, cfg.eval.batch_size), 0

    def _untuned(self, cfg: RunConfig, task: GenerativeTask | MultipleChoiceTask, splits, out_dir: Path):
        """The task's own evaluation of the untuned model, its prompts led by `shots` worked training rows
        (generative tasks generate; multiple choice scores each choice's log-likelihood)."""
        from lmtune.models.loading import load_backbone

        task.use_demonstrations(splits.train, self.sample(cfg, len(splits.train)))
        model = place(task.build_model(load_backbone(cfg.model, task.backbone_class, cfg.train.seed)).eval())
        tables = evaluation_splits(splits)
        by_split = {}
        for split, table in tables.items():
            # As after training: with a test split, validation gets the cheap metrics only (no generation).
            by_split[split] = task.evaluate(model, table, cfg.eval.batch_size, quick=split == "validation" and len(tables) > 1)
            take_predictions(by_split[split], out_dir, split)
        return by_split, model.parameter_counts()["total_params"], {}


def is_decoder(cfg: RunConfig) -> bool:
    """From the model's config alone (no weights): decoders score label words, encoders compare embeddings."""
    from transformers import AutoConfig

    from lmtune.models.loading import backbone_kind, resolve_model_path

    return backbone_kind(AutoConfig.from_pretrained(resolve_model_path(cfg.model))) == "decoder"


def row_text(cfg: RunConfig, row: dict) -> dict[str, str]:
    data = cfg.data
    return {"text": str(row[data.text_column]), "pair": str(row[data.text_pair_column]) if data.text_pair_column else None}


def split_metrics(scores: np.ndarray, labels: list[str], gold: list) -> dict[str, Any]:
    """Classification metrics from label scores; the probabilities are their softmax."""
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    index = {label: i for i, label in enumerate(labels)}
    label_ids = np.array([index[str(v)] for v in gold])
    metrics = classification_metrics(label_ids, probs, labels)
    metrics["loss"] = float(-np.log(np.clip(probs[np.arange(len(label_ids)), label_ids], 1e-12, None)).mean())
    metrics["rows"] = len(label_ids)
    return metrics


# ---- label-word scoring ---------------------------------------------------------------------------------------

LOGIT_BUDGET = 2**27
"""Logits one scoring batch may hold (512 MB in float32): a batch is as many sequences as fit with the vocabulary."""
SLOT = re.compile(r"\{(text|pair|labels)\}")


class LabelPrompts:
    """The demonstrations (the template filled with each one's text and label word), then the input up to the
    `{label}` slot. Whitespace before the slot moves to the scored continuation (" great", not "great" after a
    trailing space), as tokenizers that fold a leading space into the word expect."""

    def __init__(self, template: str, labels: list[str], verbalizers: dict[str, str], demonstrations: list[tuple[dict, str]]):
        unknown = sorted(set(verbalizers) - set(labels))
        if unknown:
            raise LmtuneError(f"verbalizers name labels the data lacks: {unknown}; the labels are {labels}")
        self.labels, self.demonstrations = labels, demonstrations
        self.words = {label: str(verbalizers.get(label, label)) for label in labels}
        if len(set(self.words.values())) < len(labels):
            raise LmtuneError(f"two labels share a word ({self.words}); give each label its own verbalizer")
        words = list(self.words.values())
        self.choices = f"{', '.join(words[:-1])} or {words[-1]}" if len(words) > 1 else words[0]
        self.head, self.tail = template.split("{label}")
        self.prefix = "".join(self.fill(self.head, row) + self.words[label] + self.fill(self.tail, row) + "\n\n"
                              for row, label in demonstrations)

    def fill(self, part: str, row: dict) -> str:
        text = row["text"] if row["pair"] is None or "{pair}" in self.head else f"{row['text']}\n{row['pair']}"
        return SLOT.sub(lambda m: {"text": text, "pair": str(row["pair"]), "labels": self.choices}[m[1]], part)

    def context(self, row: dict) -> tuple[str, str]:
        """(the prompt, the whitespace that starts each label's continuation)."""
        full = self.prefix + self.fill(self.head, row)
        prompt = full.rstrip()
        return prompt, full[len(prompt):]


def label_scores(backbone, prompts: LabelPrompts, rows: list[dict], limit: int, reduce: str, max_rows: int):
    """Scores [rows, labels]: the mean or summed log-likelihood of each label's word after the prompt; and how
    many prompts were cut (oldest tokens first, the demonstrations) to fit `limit` tokens."""
    tokenizer, config = backbone.tokenizer, backbone.body.config
    limit = min(limit, getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or limit)
    probe, plain = (tokenizer("a", add_special_tokens=flag)["input_ids"] for flag in (True, False))
    lead = probe[: len(probe) - len(plain)] if probe[len(probe) - len(plain):] == plain else []  # BOS, where added
    sequences, truncated = [], 0
    for row in rows:
        prompt, gap = prompts.context(row)
        context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for word in prompts.words.values():
            whole = tokenizer(prompt + gap + word, add_special_tokens=False)["input_ids"]
            # The word's tokens as the whole text tokenizes them, unless a merge crossed the boundary.
            tail = whole[len(context):] if whole[: len(context)] == context else []
            tail = tail or tokenizer(gap + word, add_special_tokens=False)["input_ids"]
            room = max(1, limit - len(lead) - len(tail))
            truncated += len(context) > room
            head = lead + context[-room:] if context else lead or [tokenizer.eos_token_id]
            sequences.append((head + tail, len(tail)))
    logprobs = continuation_logprobs(backbone.body, tokenizer.pad_token_id, sequences, max_rows)
    pick = np.mean if reduce == "mean" else np.sum
    scores = np.array([pick(lp) for lp in logprobs]).reshape(len(rows), len(prompts.words))
    return scores, truncated // len(prompts.words)


@torch.no_grad()
def continuation_logprobs(body, pad_id: int, sequences: list[tuple[list[int], int]], max_rows: int) -> list[np.ndarray]:
    """Log-probabilities of the last n tokens of each sequence; longest first, right-padded (causal attention
    never looks at the padding after a position)."""
    budget = max(1, LOGIT_BUDGET // body.config.get_text_config().vocab_size)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i][0]))
    result: list[np.ndarray] = [np.empty(0)] * len(sequences)
    while order:
        width = len(sequences[order[0]][0])
        take = max(1, min(max_rows, budget // width))
        batch, order = order[:take], order[take:]
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(batch):
            ids[row, : len(sequences[i][0])] = torch.tensor(sequences[i][0])
            mask[row, : len(sequences[i][0])] = 1
        logits = body(**to_model_device({"input_ids": ids, "attention_mask": mask}, body)).logits
        for row, i in enumerate(batch):
            tokens, n = sequences[i]
            step = logits[row, len(tokens) - n - 1 : len(tokens) - 1].float().log_softmax(-1)
            result[i] = step.gather(1, torch.tensor(tokens[-n:], device=step.device)[:, None]).squeeze(1).cpu().numpy()
    return result
