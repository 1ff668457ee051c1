"""What generative tasks share (instruction following, translation): a causal or encoder-decoder LM keeps its
pretrained LM head, learns the response with the prompt masked out of the loss, and is evaluated by generating.

Each subclass says how rows become `Example`s and how generations are scored.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import datasets
import torch
from pydantic import Field
from torch import nn
from transformers import DataCollatorForSeq2Seq

from lmtune.config.schema import GenerationConfig, TaskConfig
from lmtune.data.splits import Splits
from lmtune.data.templates import Example, PromptTemplate, TemplateName, build_template, stop_strings
from lmtune.device import to_model_device
from lmtune.errors import LmtuneError
from lmtune.evaluate.generation import generate_texts, length_batches
from lmtune.tasks.base import Task, TaskModel

IGNORE = -100  # label id the loss skips


class GenerativeTaskConfig(TaskConfig):
    template: TemplateName = "auto"
    """Prompt format: `alpaca` (the LLM-Adapters paper's), `chat` (the model's own chat template), `auto` (chat
    where the tokenizer has a chat template, else alpaca)."""
    train_on_inputs: bool = False
    """Also learn to produce the prompt; by default the loss covers the response only."""
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    """Decoding at evaluation and prediction time."""


class GenerativeModel(TaskModel):
    """The body is the whole LM (its head included); PEFT wraps it as a causal or seq2seq LM so that prompt
    methods also handle labels and generation."""

    accepts_loss_kwargs = True  # the LM's loss honours num_items_in_batch: exact means under gradient accumulation

    def __init__(self, backbone):
        super().__init__(backbone)
        self.encoder_decoder = bool(getattr(backbone.body.config, "is_encoder_decoder", False))
        self.peft_task_type = "SEQ_2_SEQ_LM" if self.encoder_decoder else "CAUSAL_LM"
        if not self.encoder_decoder:  # Trainer then counts the loss tokens as the shifted loss sees them: labels[:, 1:]
            self.loss_type = "ForCausalLM"
            self.takes_packed_rows = True  # a token loss over rows concatenated with restarting positions

    labelled_logits_only = False
    """Compute vocabulary logits only where the next token is in the loss (`train.lm_logits`; set by the trainer
    setup). The plain path (logits everywhere, the LM's own loss) is the reference it is tested against."""

    def forward(self, input_ids=None, attention_mask=None, labels=None, num_items_in_batch=None, position_ids=None,
                **_: Any):
        extra = {"num_items_in_batch": num_items_in_batch} if num_items_in_batch is not None else {}
        if position_ids is not None:  # packed rows (train.packing): positions restart at every sequence
            extra["position_ids"] = position_ids
        if labels is not None and not self.encoder_decoder:
            # A loss needs no KV cache, and packing needs its absence: with a cache (config.use_cache, on by default)
            # transformers 5.24 skips the packed-sequence detection and packed rows would attend to each other.
            extra["use_cache"] = False
        if labels is not None and self.labelled_logits_only:
            return self._labelled_loss(input_ids, attention_mask, labels, num_items_in_batch, extra)
        return self.body(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **extra)

    def can_keep_logits(self) -> bool:
        """Decoders with an output-embeddings module (the LM head) under an adapter that keeps the positions
        (asked once, by the trainer setup: not per step, where torch.compile would trace it)."""
        if self.encoder_decoder or is_prompt_learning(self.body):
            return False
        return self.body.get_output_embeddings() is not None

    def _labelled_loss(self, input_ids, attention_mask, labels, num_items_in_batch, extra):
        """The causal LM loss with logits only at the positions (row, t) whose target labels[row, t+1] counts,
        row by row: the same sum of token losses over the same denominator as transformers' ForCausalLMLoss,
        without the logits of prompts and padding. The LM's own forward runs (so whatever it does after its head,
        such as a soft cap, still applies); a hook hands its head the kept hidden states only, as [N, hidden]."""
        extra = {k: v for k, v in extra.items() if k != "num_items_in_batch"}  # the loss is computed here
        targets = labels[:, 1:]
        counted = targets != IGNORE
        keep = nn.functional.pad(counted, (0, 1))  # position t predicts t + 1; the last position predicts nothing
        head = self.body.get_output_embeddings()
        handle = head.register_forward_pre_hook(lambda _module, args: (args[0][keep], *args[1:]))
        try:
            output = self.body(input_ids=input_ids, attention_mask=attention_mask, **extra)
        finally:
            handle.remove()
        logits = output.logits.float()
        loss = nn.functional.cross_entropy(logits, targets[counted], reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else counted.sum()
        output.loss = loss / count
        return output


def is_prompt_learning(body) -> bool:
    """PEFT's prompt-learning adapters (prompt/p-/prefix tuning) prepend virtual tokens and handle labels themselves."""
    return bool(getattr(getattr(body, "active_peft_config", None), "is_prompt_learning", False))


class FewShotTemplate(PromptTemplate):
    """A template whose prompts start with worked examples (prompt and response each), then the real prompt.

    It lives here, not in data/templates.py, because `GenerativeTask.template()` is what applies it: generation,
    the loss and prediction all get the same prompts, and tasks need not know who set the demonstrations."""

    def __init__(self, inner: PromptTemplate, demonstrations: list[Example]):
        self.inner, self.name = inner, inner.name  # the inner name keeps its stop strings
        self.add_special_tokens, self.append_eos = inner.add_special_tokens, inner.append_eos
        # Chat responses end with their end-of-turn marker; plain ones need a gap before the next prompt.
        gap = "\n\n" if inner.append_eos else ""
        self.prefix = "".join(inner.prompt(d) + inner.response(d) + gap for d in demonstrations)

    def prompt(self, example: Example) -> str:
        return self.prefix + self.inner.prompt(example)

    def response(self, example: Example) -> str:
        return self.inner.response(example)


class GenerativeTask(Task):
    backbone_class = "AutoModelForCausalLM"  # encoder-decoder configs load as Seq2SeqLM (models/loading.py)
    default_max_length = 256  # the LLM-Adapters cut-off
    default_metric = "loss"
    checkpoint_metrics = ("loss",)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.encoder_decoder = False  # set by build_model: how features are laid out
        self._truncated: dict[str, int] = {}  # table fingerprint -> rows cut to max_length
        self.dropped_train_rows = 0
        self.demonstrations: list[Example] = []
        """Worked examples every prompt starts with (few-shot prompting of an untuned model); empty: zero-shot."""

    @abstractmethod
    def read_split(self, which: str) -> datasets.Dataset | None:
        """The raw table of a split (None where not configured)."""

    @abstractmethod
    def examples(self, table: datasets.Dataset) -> list[Example]:
        """Rows as examples; bad records raise a clear error."""

    @abstractmethod
    def score(self, examples: list[Example], generations: list[str]) -> dict[str, Any]:
        """Task metrics, plus a `predictions` list a person can read."""

    def use_demonstrations(self, table: datasets.Dataset, rows: list[int]) -> None:
        """Start every prompt with these rows of `table`, worked (k-shot prompting of an untuned model)."""
        examples = self.examples(table)
        self.demonstrations = [examples[i] for i in rows]

    def stop_strings(self, template: PromptTemplate) -> list[str]:
        """Where a generation that runs past its answer is cut (the template's next section)."""
        return stop_strings(template)

    def trainer_metrics(self):
        return None  # generation runs once after training; checkpoints are picked by validation loss

    # ---- data -------------------------------------------------------------------------------------------------

    def load_data(self) -> Splits:
        data, seed = self.cfg.data, self.cfg.train.seed
        train = self.read_split("train")
        if train is None:
            raise LmtuneError("no training data: set data.train")
        empty = [i for i, e in enumerate(self.examples(train)) if not e.output]
        if len(empty) == len(train):
            raise LmtuneError("every training row has an empty response (output/target): there is nothing to learn")
        if empty:  # e.g. 3 of the 3,260 rows of LLM-Adapters' math_data.json
            print(f"{self.name}: {len(empty)} training rows have an empty response and are left out (first: row {empty[0]})")
            train = train.select(sorted(set(range(len(train))) - set(empty)))
        self.dropped_train_rows = len(empty)
        if data.max_train_samples and data.max_train_samples < len(train):
            train = train.shuffle(seed=seed).select(range(data.max_train_samples))
        validation = self.read_split("validation")
        if validation is None:
            if len(train) < 4:
                raise LmtuneError(f"the training data has {len(train)} rows; too few to split off validation (give data.validation)")
            parts = train.train_test_split(test_size=data.validation_fraction, seed=seed)
            train, validation = parts["train"], parts["test"]
        return Splits(train, self._checked(validation, "validation"), self._checked(self.read_split("test"), "test"))

    def _checked(self, table, split: str):
        if table is None:
            return None
        if len(table) == 0:
            raise LmtuneError(f"the {split} data is empty")
        self.examples(table)  # format errors surface now, not after training
        limit = self.cfg.data.max_eval_samples
        return table.select(range(min(limit, len(table)))) if limit else table

    # ---- model and features -----------------------------------------------------------------------------------

    def build_model(self, backbone) -> GenerativeModel:
        config = backbone.body.config
        if backbone.kind != "decoder" and not getattr(config, "is_encoder_decoder", False):
            raise LmtuneError(
                f"the {self.name} task generates text: it needs a decoder (causal LM, e.g. smollm2) or an encoder-decoder "
                f"model (e.g. T5); {backbone.model_id} is an encoder ({config.model_type})"
            )
        model = GenerativeModel(backbone)
        self.encoder_decoder = model.encoder_decoder
        return model

    def template(self, tokenizer) -> PromptTemplate:
        template = build_template(self.cfg.task.template, tokenizer)
        return FewShotTemplate(template, self.demonstrations) if self.demonstrations else template

    def encode(self, table, tokenizer):
        template = self.template(tokenizer)
        rows = [self._features(e, template, tokenizer) for e in self.examples(table)]
        truncated = sum(r.pop("truncated") for r in rows)
        self._truncated[table._fingerprint] = truncated
        if truncated:
            print(f"{self.name}: {truncated} of {len(rows)} rows were cut to model.max_length={self.cfg.model.max_length} "
                  "tokens (their responses lose their ends); raise model.max_length to keep them")
        return datasets.Dataset.from_list(rows)

    def _features(self, example: Example, template: PromptTemplate, tokenizer) -> dict:
        limit = self.cfg.model.max_length
        prompt = tokenizer(template.prompt(example), add_special_tokens=template.add_special_tokens)["input_ids"]
        if self.encoder_decoder:
            target = tokenizer(text_target=template.response(example))["input_ids"]
            truncated = len(prompt) > limit or len(target) > limit
            return {"input_ids": prompt[:limit], "attention_mask": [1] * min(len(prompt), limit),
                    "labels": target[:limit], "truncated": truncated}
        response = tokenizer(template.response(example), add_special_tokens=False)["input_ids"]
        if template.append_eos and tokenizer.eos_token_id is not None:
            response = response + [tokenizer.eos_token_id]
        ids = prompt + response
        labels = (prompt if self.cfg.task.train_on_inputs else [IGNORE] * len(prompt)) + response
        return {"input_ids": ids[:limit], "attention_mask": [1] * min(len(ids), limit), "labels": labels[:limit],
                "truncated": len(ids) > limit}

    def collator(self, tokenizer):
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE, padding=True)

    def compute_metrics(self, logits, label_ids) -> dict[str, Any]:
        raise NotImplementedError("generative tasks are scored by generating (evaluate), not from logits")

    def data_report(self, splits: Splits) -> dict[str, Any]:
        return {"truncated_train_rows": self._truncated.get(splits.train._fingerprint),
                "dropped_train_rows": self.dropped_train_rows}

    # ---- evaluation -------------------------------------------------------------------------------------------

    def evaluate(self, model: TaskModel, table, batch_size: int, quick: bool = False) -> dict[str, Any]:
        examples = self.examples(table)
        metrics: dict[str, Any] = {"rows": len(examples)}
        with_output = [i for i, e in enumerate(examples) if e.output]
        if with_output:  # some test sets (mawps, mathqa) carry answers only: no response to score the loss on
            metrics["loss"] = self.loss(model, table.select(with_output), batch_size)
        if quick:
            return metrics
        metrics.update(self.score(examples, self.generate(model, examples)))
        return metrics

    def generate(self, model: TaskModel, examples: list[Example]) -> list[str]:
        template = self.template(model.tokenizer)
        prompts = [template.prompt(e) for e in examples]
        return generate_texts(
            model, prompts, self.cfg.task.generation, template.add_special_tokens,
            stops=self.stop_strings(template), progress=self.cfg.train.show_progress(),
        )

    @torch.no_grad()
    def loss(self, model: TaskModel, table, batch_size: int) -> float:
        """Mean loss per response token (teacher forcing)."""
        encoded = self.encode(table, model.tokenizer).to_list()
        collate = self.collator(model.tokenizer)
        model.eval()
        total, tokens = 0.0, 0
        for rows in length_batches([len(row["input_ids"]) for row in encoded], batch_size, equal_lengths=False):
            batch = collate([encoded[i] for i in rows])  # rows of similar lengths: little padding
            count = int((batch["labels"] != IGNORE).sum())
            total += float(model(**to_model_device(batch, model)).loss) * count
            tokens += count
        return total / max(tokens, 1)

    def predict(self, model: TaskModel, rows: list[dict]) -> list[dict]:
        table = datasets.Dataset.from_list(rows)
        examples = self.examples(table)
        return [self.prediction(e, g) for e, g in zip(examples, self.generate(model, examples))]

    def prediction(self, example: Example, generation: str) -> dict[str, Any]:
        return {"generation": generation}
