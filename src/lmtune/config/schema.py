"""The sections of a run configuration. Every field has a docstring: `lmtune methods` and `lmtune config --help`
print them.

This package is the bottom layer: it imports nothing from lmtune but `lmtune.errors`. The assembled `RunConfig`
(whose `method` and `task` are unions over the registered strategies and tasks) lives in `lmtune.runconfig`, one
layer above the strategies and tasks.
"""

from __future__ import annotations

import sys
from pathlib import PurePath
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lmtune.config.paths import LocalPath
from lmtune.errors import LmtuneError


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, field docstrings become descriptions, and a
    validated config is frozen (a default filled in later, in place, would make the saved config lie); a changed
    copy comes from `updated`."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    def updated(self, changes: dict[str, Any]) -> Self:
        """A validated copy with dotted keys changed: `cfg.updated({"train.learning_rate": 1e-3})`."""
        raw = self.model_dump()
        for key, value in changes.items():
            set_dotted(raw, key.split("."), value)
        return type(self).model_validate(raw)


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


class ModelConfig(StrictModel):
    name: Annotated[str, LocalPath(only_if_exists=True)] = "minilm"
    """Backbone: a bundled name (`minilm`, `smollm2`), a local model folder, a `.gguf` file, or a hub id (online only)."""
    gguf_file: str | None = None
    """File name of a GGUF checkpoint inside the `name` folder (converted once to a cached safetensors folder)."""
    init: Literal["pretrained", "random"] = "pretrained"
    """`random`: the same architecture and tokenizer with freshly initialised weights (seeded by train.seed): the
    no-transfer control that shows what pre-training is worth."""
    pooling: Literal["auto", "mean", "cls", "last"] = "auto"
    """How a sequence becomes one vector for a head: `auto` reads the backbone (sentence-transformers models say
    mean; other encoders mean; decoders the last real token)."""
    pooling_layers: int | None = Field(None, gt=0)
    """How many of the body's last hidden layers a classification head reads, each pooled as `pooling` says and
    concatenated (the embedding output counts as a layer; at most all of them). None: the strategy's default, 4
    where the body's weights stay frozen (`freeze` head only, prompt tuning, p-tuning: the feature-based recipe of
    BERT's paper; a frozen top layer is shaped by the pre-training objective, the layers below it hold more of
    what a new task needs; benchmarks/RESULTS.md measures it), 1 wherever the body's weights train."""
    max_length: int | None = Field(None, gt=0)
    """Inputs (prompt plus response for generative tasks) are cut to this many tokens; none takes the task's
    default (128 for classification and tagging, 256 for instruction and translation: the LLM-Adapters cut-off)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """The dtype the base's weights load in; `auto` is bfloat16 where a CUDA GPU supports it, float32 on the CPU
    (the resolved config records which). Adapters and task heads keep float32 weights whatever the base's dtype."""
    quantization: Literal["none", "4bit", "8bit"] = "none"
    """Load the base quantised by bitsandbytes (`4bit`: NF4 with bf16 compute, as QLoRA; `8bit`: LLM.int8) and
    train LoRA or another adapter on top; needs a CUDA GPU and `pip install 'lmtune[gpu]'`. Methods that train
    the base's own weights (full, freeze with layers) are refused on a quantised base."""


class DataConfig(StrictModel):
    train: Annotated[str | None, LocalPath(unless="hub")] = None
    """Training file (jsonl, json, csv, tsv) or, with `hub`, the split name."""
    validation: Annotated[str | None, LocalPath(unless="hub")] = None
    """Validation file or split; when missing, `validation_fraction` of train is split off (seeded, stratified)."""
    test: Annotated[str | None, LocalPath(unless="hub")] = None
    """Optional held-out test file or split, evaluated once at the end."""
    hub: str | None = None
    """A Hugging Face hub dataset name (needs internet); then train/validation/test name its splits."""
    hub_subset: str | None = None
    """The hub dataset's configuration name (e.g. `sst2` for `glue`)."""
    format: Literal["auto", "jsonl", "json", "csv", "tsv"] = "auto"
    """File format; `auto` reads the extension."""
    text_column: str = "text"
    """Column with the input text."""
    text_pair_column: str | None = None
    """Column with the second text of a pair (paraphrase, entailment); none for single texts."""
    label_column: str = "label"
    """Column with the label."""
    labels: list[str] | None = None
    """The label set, in order; read from the training data (sorted) when not given. Every label in every split
    must belong to it."""
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    """Share of the training data held out for validation when no validation split is given."""
    max_train_samples: int | None = Field(None, gt=0)
    """Use a seeded, stratified sample of this many training rows (quick runs, learning curves)."""
    max_eval_samples: int | None = Field(None, gt=0)
    """Evaluate on at most this many rows of validation/test."""

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_strings(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value


class TaskConfig(StrictModel):
    """Base of every task's config; each task file defines its own subclass with a `name` literal."""

    name: str
    """What the model learns to do: `classification` (a label per text or pair), `instruction` (generate a
    response; math and commonsense answers are extracted and scored), `translation`, `token_classification`."""


class GenerationConfig(StrictModel):
    """How generative tasks decode at evaluation and prediction time."""

    max_new_tokens: int = Field(256, gt=0)
    """Stop after this many generated tokens."""
    num_beams: int = Field(1, gt=0)
    """1: greedy decoding (the default); more: beam search."""
    batch_size: int = Field(16, gt=0)
    """Prompts generated together (rows are sorted by length first, so padding stays small)."""
    stop: list[str] = []
    """Generation is cut at the first of these strings (the end-of-turn token always stops it)."""


class MethodConfig(StrictModel):
    """Base of every strategy's config; each strategy file defines its own subclass with a `name` literal."""

    name: str
    """The fine-tuning strategy; `lmtune methods` lists them all."""


class FsdpConfig(StrictModel):
    """Fully sharded data parallel (FSDP2, PyTorch's `fully_shard`) through Trainer and accelerate, for a base that
    does not fit one device: each process that `torchrun`/`accelerate launch` starts holds a shard of the weights,
    gradients and optimizer state. Becomes TrainingArguments' `fsdp=True` and `fsdp_config`; in a single process
    it has no effect."""

    sharding: Literal["full_shard", "shard_grad_op"] = "full_shard"
    """`full_shard`: weights, gradients and optimizer state are sharded, a layer's weights gathered for its forward
    and backward and freed after (ZeRO-3, least memory); `shard_grad_op`: weights stay gathered between forward
    and backward (ZeRO-2, fewer all-gathers, more memory). Trainer's `reshard_after_forward` true / false."""
    wrap_layers: list[str] | None = None
    """Module class names that each become one FSDP unit (e.g. [LlamaDecoderLayer]), so only one layer's full
    weights exist at a time; none takes the base model's own list (transformers' `_no_split_modules`)."""
    cpu_offload: bool = False
    """Keep sharded parameters and gradients in CPU memory between uses (fits bigger models, runs slower)."""
    options: dict[str, Any] = {}
    """Any other key of Trainer's `fsdp_config`, passed through as given (e.g. `cpu_ram_efficient_loading: true`,
    `activation_checkpointing: true`, `state_dict_type: SHARDED_STATE_DICT`); the fields above win."""


RENAMED_TRAIN_KEYS = {"bf16": "train.precision=bf16 (or auto: bf16 where the GPU supports it)"}
"""Keys an older lmtune read, and what to write instead: refused with that fix rather than a bare "unknown key"."""


class TrainSettings(StrictModel):
    """Base of the train sections (`lmtune train`'s and `lmtune pretrain`'s): refuses a renamed key with its fix."""

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for old, new in RENAMED_TRAIN_KEYS.items():
                if old in value:
                    raise ValueError(f"train.{old} was replaced: write {new}")
        return value


class TrainConfig(TrainSettings):
    epochs: float = Field(3.0, gt=0)
    """Passes over the training data."""
    max_steps: int | None = Field(None, gt=0)
    """Stop after this many optimiser steps (overrides epochs)."""
    batch_size: int = Field(32, gt=0)
    """Training examples per step (per device)."""
    gradient_accumulation_steps: int = Field(1, gt=0)
    """Steps whose gradients add up before one optimiser update."""
    learning_rate: float | None = Field(None, gt=0)
    """Peak learning rate; none takes the strategy's default (full fine-tuning wants ~5e-5, prompts ~1e-2)."""
    head_learning_rate: float | None = Field(None, gt=0)
    """Learning rate of the new task head; none takes the larger of `learning_rate` and 5e-3 (a head trained from
    scratch needs bigger steps than a pretrained body)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    """Share of steps spent warming the learning rate up."""
    lr_scheduler: str = "linear"
    """A transformers scheduler name: linear, cosine, constant, constant_with_warmup, ..."""
    seed: int = 42
    """Seeds data order, splits, dropout and new weights."""
    early_stopping_patience: int | None = Field(None, gt=0)
    """Stop when the validation metric has not improved for this many evaluations."""
    keep_best: bool = True
    """End with the checkpoint that scored best on the validation metric (`eval.metric`), not the last one (on small
    data the validation loss often rises long before the last epoch). Needs `eval_every` epoch or steps."""
    head_fit: Literal["lbfgs", "trainer"] = "lbfgs"
    """How a head on a frozen body trains, when nothing below the head trains and the task's head reads pooled
    features (classification): `lbfgs` runs the body once per split (features cached in the run directory) and fits
    the head to convergence by full-batch L-BFGS, its L2 strength picked by the validation loss; `trainer` trains
    it through full forward passes like any other strategy (slower, the reference)."""
    class_weights: bool = False
    """Weigh each label's loss by the inverse of its share of the training rows (imbalanced labels): in the L-BFGS
    head fit (`head_fit: lbfgs`)."""
    eval_every: Literal["epoch", "steps", "no"] = "epoch"
    """When to evaluate and checkpoint during training."""
    eval_steps: int = Field(100, gt=0)
    """Steps between evaluations when `eval_every` is `steps`."""
    logging_steps: int = Field(10, gt=0)
    """Steps between loss log lines."""
    resume: bool = False
    """Continue a killed run from its newest complete checkpoint (same run directory); one the kill cut short is
    reported and removed."""
    init_from: Annotated[str | None, LocalPath()] = None
    """A finished run directory of the same strategy and base model: start from its trained weights and train
    further (works for p-tuning too, which PEFT cannot resume)."""
    keep_checkpoints: bool = False
    """Keep the intermediate checkpoints after a successful run (they are deleted by default to save disk)."""
    save_total_limit: int = Field(2, gt=0)
    """Checkpoints kept while training."""
    num_threads: int | None = Field(None, gt=0)
    """CPU threads for torch; none uses all cores."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Mixed precision of the forward and backward passes (Trainer's autocast; fp16 adds a loss scaler). `auto`:
    bf16 on GPUs that support it, fp16 on older GPUs or for a float16 base, fp32 (no autocast) on the CPU."""
    fsdp: FsdpConfig | None = None
    """Shard the model over the processes of a `torchrun`/`accelerate launch` run (FSDP); none: each process holds
    a full copy (DDP). `train.fsdp={}` takes every default (full sharding, layer by layer)."""
    progress: bool | None = None
    """Progress bars with rate and ETA; none: bars on a terminal, one line per epoch when the output is a file."""

    def show_progress(self) -> bool:
        """Whether to draw progress bars: `progress`, or when unset whether stderr (where bars go) is a terminal;
        a log file gets one line per epoch instead of every redraw."""
        return sys.stderr.isatty() if self.progress is None else self.progress

    # Speed and memory switches (lmtune.train.speed). Each keeps the plain path as its reference: tests check
    # that loss and gradients agree. Defaults were chosen by measurement (benchmarks/RESULTS.md, train_speed).
    group_by_length: bool = True
    """Batch rows of similar length together, so little compute goes to padding; the batches are still shuffled.
    false: uniformly random batches."""
    length_pool: int = Field(50, gt=0)
    """With group_by_length: the epoch's rows, shuffled, are cut into pools of this many batches; each pool is
    sorted by length and cut into batches, and all batches are shuffled. Bigger pools: less padding, batches less
    random. transformers' LengthGroupedSampler also caps its pools at 50 batches, but shrinks them to
    rows / (4 x batch) batches, which on small sets leaves much padding (SST-2, 2,000 rows, batch 32: 86% of the
    batch tokens real against 94% here)."""
    packing: bool | Literal["auto"] = "auto"
    """Padding-free batches for decoders: a batch's rows are concatenated into one row with per-sequence position
    ids (transformers' DataCollatorWithFlattening), and the causal mask keeps them apart. Exact for a decoder whose
    attention builds its mask with transformers' masking utilities (not under a prompt-learning adapter, which
    prepends virtual tokens to each row). `auto`: where it is exact and pays, i.e. with attention kernels that skip
    the pairs across rows (flash_attention_2/3, flex_attention); with sdpa/eager the length-grouped batches are
    faster. true packs wherever it is exact and refuses a model where it is not."""
    lm_logits: Literal["labelled", "all"] = "labelled"
    """`labelled`: a causal LM computes vocabulary logits only at the positions whose next token is in the loss
    (the response, by default), row by row: none for the prompt nor for padding (same loss, less compute and
    memory); `all`: every position."""
    torch_compile: bool | Literal["auto"] = "auto"
    """Compile the model with torch.compile (Trainer's flag). `auto`: on a CUDA GPU only (1.7x for LoRA on an H100
    in issue 19's measurement); on this project's CPUs compilation costs more than a fine-tuning run saves."""
    liger_kernel: bool | Literal["auto"] = "auto"
    """Liger-Kernel's fused Triton kernels (RMSNorm, SwiGLU, RoPE, fused linear cross-entropy) on the architectures
    it supports: GPUs only, `pip install 'lmtune[gpu]'`. `auto`: where it is installed, a GPU is there and the
    architecture is supported; true refuses a run where it cannot apply."""
    fast_dropout: bool | Literal["auto"] = "auto"
    """Draw dropout masks from 16-bit random numbers (lmtune.train.dropout): the same inverted dropout, p rounded to
    a multiple of 2^-16, at under half the cost of torch's on the CPU. `auto`: on the CPU; CUDA keeps torch's fused
    kernel. Applies to every `nn.Dropout` of the model (LoRA's and the adapters' dropout, the body's own)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them: less memory, about a third more time."""


class LaunchConfig(StrictModel):
    """How `lmtune compare` and `lmtune tune` start each training run: in their own process, or as several
    processes through the launchers users already run (never one of lmtune's own)."""

    processes: int = Field(1, gt=0)
    """Processes per run (one node: usually its GPU count). 1 trains in this process; N > 1 runs each entry or
    trial as `torchrun --standalone --nproc_per_node N -m lmtune train <its config>` in a subprocess and reads
    its metrics.json; its output goes to a log file beside the run."""
    launcher: Literal["torchrun", "accelerate"] = "torchrun"
    """`torchrun`, or `accelerate launch --num_processes N` (with `--multi_gpu` unless `args` give an accelerate
    config file or another mode)."""
    args: list[str] = []
    """Extra launcher arguments, placed before `-m lmtune`: e.g. [--config_file, fsdp.yaml] for accelerate."""


class EvalConfig(StrictModel):
    batch_size: int = Field(64, gt=0)
    """Examples per evaluation batch."""
    metric: str | None = None
    """The metric that picks the best checkpoint and stops early; none takes the task's default. Classification:
    `accuracy`, `macro_f1`, `roc_auc`, `pr_auc`, `loss`; tagging: `f1`, `precision`, `recall`, `loss`; generative
    tasks: `loss` (generation metrics are computed once, after training)."""


class OutputConfig(StrictModel):
    dir: Annotated[str, LocalPath()] = "runs"
    """Folder that holds run directories (relative: to where lmtune was run, as every path in a config)."""
    name: str | None = None
    """Run directory name inside `dir`; defaults to the strategy name."""
    overwrite: bool = False
    """Replace an existing finished run of the same name (only a folder lmtune made: one with its provenance.json)."""

    @field_validator("name")
    @classmethod
    def _inside_dir(cls, value: str | None) -> str | None:
        if value is not None and (value.strip() in ("", ".") or PurePath(value).is_absolute()
                                  or ".." in PurePath(value).parts):
            raise ValueError("output.name names the run's folder inside output.dir: not empty, '.', '..' or an "
                             "absolute path (set output.dir to put runs somewhere else)")
        return value
