"""Configs of `lmtune pretrain {tokenizer,model,continue}`: pydantic, unknown keys refused, a docstring per field.

Settings `lmtune train` has too (learning rate, batch size, threads, seed, ...) keep its names and come from its
`TrainConfig` field by field (same type, limits and docstring); only pre-training's own settings (packing,
perplexity, the optimiser choice) are defined here. `continue` validates its `method` section with the strategy
registry, exactly as a run config does.
"""

from __future__ import annotations

from copy import copy
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from lmtune.config.paths import LocalPath, resolve_paths
from lmtune.config.schema import StrictModel, TrainConfig, TrainSettings
from lmtune.errors import LmtuneError
from lmtune.methods import STRATEGIES
from lmtune.pretrain.architectures import ArchConfig
from lmtune.runconfig import MethodSection, named_section


class CorpusConfig(StrictModel):
    files: Annotated[list[str], LocalPath()] = []
    """Raw text: files (.txt and anything else is read as plain text; .jsonl/.json lines as records), folders
    (every .txt/.tokens/.jsonl inside, recursively, but README/SOURCES/LICENSE files) or glob patterns. Encodings: UTF-8, else latin-1; CRLF becomes LF."""
    text_field: str = "text"
    """The field of jsonl records that holds the text."""
    validation: Annotated[list[str], LocalPath()] = []
    """Held-out text (files/folders/globs) for validation perplexity; when empty, `validation_fraction` of the
    corpus's pieces is held out instead."""
    validation_fraction: float = Field(0.05, ge=0, lt=1)
    """Share of the corpus held out when `validation` is empty: every n-th piece (a jsonl record, or a chunk of
    about `chunk_chars` of a text file), the same pieces on every run and in streaming mode."""
    chunk_chars: int = Field(100_000, gt=0)
    """Text files are read in pieces of about this many characters, cut at line ends (memory stays flat)."""
    max_chars: int | None = Field(None, gt=0)
    """Read at most this many characters of training text (quick runs); none reads everything."""
    max_validation_chars: int | None = Field(200_000, gt=0)
    """Evaluate perplexity on at most this many characters of held-out text; none evaluates all of it."""
    streaming: bool = False
    """Read, tokenise and pack the corpus on the fly instead of in memory first (corpora larger than memory);
    needs `train.max_steps`."""
    shuffle_buffer: int = Field(1000, ge=0)
    """Streaming only: packed blocks are shuffled within a buffer of this many (0: in corpus order)."""


class TokenizerConfig(StrictModel):
    path: Annotated[str | None, LocalPath()] = None
    """A tokenizer folder to use as is (e.g. one `lmtune pretrain tokenizer` wrote, or a model folder); when
    none, `lmtune pretrain model` trains one on its corpus with the options below."""
    kind: Literal["bpe", "wordpiece", "unigram"] = "bpe"
    """The subword model: byte-level `bpe` (GPT-2/Llama style, never unknown), `wordpiece` (BERT), `unigram`
    (SentencePiece style, Metaspace pre-tokenisation)."""
    vocab_size: int = Field(8000, gt=0)
    """Vocabulary size, special tokens included."""
    min_frequency: int = Field(2, ge=1)
    """Pairs (BPE/WordPiece) seen fewer times are not merged."""
    style: Literal["decoder", "encoder"] = "decoder"
    """Which special tokens and template: `decoder` (<pad> <unk> <s> </s>; documents end with </s>) or `encoder`
    ([PAD] [UNK] [CLS] [SEP] [MASK]; inputs become [CLS] text [SEP])."""
    special_tokens: dict[str, str] = {}
    """Rename special tokens, e.g. {eos: "<|endoftext|>"}; keys: pad, unk, bos, eos (decoder) or pad, unk, cls,
    sep, mask (encoder)."""
    extra_special_tokens: list[str] = []
    """More special tokens (never split), added after the named ones."""
    lowercase: bool = False
    """Lower-case text before tokenising."""
    unicode_normalization: Literal["nfkc", "nfc", "nfd", "nfkd", "none"] = "nfkc"
    """Unicode normalisation before tokenising."""
    strip_accents: bool = False
    """Remove accents (after NFD decomposition)."""
    model_max_length: int = Field(512, gt=0)
    """The length the saved tokenizer declares (the longest input a model trained with it should get)."""


class TokenizerRunConfig(StrictModel):
    """`lmtune pretrain tokenizer`: a tokenizer trained on raw text and a tokens-per-word report."""

    corpus: CorpusConfig = CorpusConfig()
    """The raw text to learn the vocabulary from (its held-out part is used for the report)."""
    tokenizer: TokenizerConfig = TokenizerConfig()
    """What to train."""
    compare_with: Annotated[list[str], LocalPath(only_if_exists=True)] = ["smollm2"]
    """Tokenizers to report tokens-per-word against on the same held-out text: model names (`smollm2`,
    `minilm`), model folders or tokenizer folders."""
    output: OutputConfig = Field(default_factory=lambda: OutputConfig(dir="runs/pretrain/tokenizer"))
    """Where the tokenizer folder goes."""


def field_of(section: type[BaseModel], name: str, **changes: Any) -> tuple[Any, Any]:
    """The field `name` of `section` as it is there (one definition, one docstring), with `changes` such as
    another default."""
    info = copy(section.model_fields[name])
    for attribute, value in changes.items():
        setattr(info, attribute, value)
    return info.annotation, info


def with_defaults(section: type[BaseModel], name: str, doc: str, **defaults: Any) -> type[BaseModel]:
    """`section` with other defaults: the same fields, limits and docstrings."""
    fields = {key: field_of(section, key, default=value) for key, value in defaults.items()}
    return create_model(name, __base__=section, __doc__=doc, __module__=__name__, **fields)


# The settings `lmtune train` has too, with pre-training's defaults.
_SharedTrainSettings = create_model(
    "_SharedTrainSettings", __base__=TrainSettings, __module__=__name__,
    epochs=field_of(TrainConfig, "epochs", default=1.0),
    max_steps=field_of(TrainConfig, "max_steps"),
    batch_size=field_of(TrainConfig, "batch_size", default=16),
    gradient_accumulation_steps=field_of(TrainConfig, "gradient_accumulation_steps"),
    learning_rate=field_of(TrainConfig, "learning_rate", default=1e-3),
    weight_decay=field_of(TrainConfig, "weight_decay", default=0.01),
    lr_scheduler=field_of(TrainConfig, "lr_scheduler", default="cosine"),
    seed=field_of(TrainConfig, "seed", default=0),
    logging_steps=field_of(TrainConfig, "logging_steps", default=20),
    resume=field_of(TrainConfig, "resume"),
    keep_checkpoints=field_of(TrainConfig, "keep_checkpoints"),
    save_total_limit=field_of(TrainConfig, "save_total_limit"),
    num_threads=field_of(TrainConfig, "num_threads"),
    precision=field_of(TrainConfig, "precision"),
    progress=field_of(TrainConfig, "progress"),
)


class PretrainTrainConfig(_SharedTrainSettings):
    """Optimisation, packing, evaluation and checkpoints of `lmtune pretrain model` and `continue`."""

    seq_len: int = Field(128, gt=1)
    """Tokens per packed block."""
    remainder: Literal["drop", "pad"] = "drop"
    """Packing: the last, partial block is dropped (`drop`, its token count is reported) or padded (`pad`, the
    padding is masked out of the loss)."""
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    """Masked-LM objective (BERT): share of tokens masked."""
    eval_steps: int = Field(200, gt=0)
    """Steps between validation perplexity measurements (also at the start and the end)."""
    eval_batch_size: int = Field(8, gt=0)
    """Blocks per batch when measuring perplexity."""
    checkpoint_every: int = Field(200, gt=0)
    """Steps between checkpoints (trained weights, optimiser, scheduler and RNG state) a killed run resumes from."""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """`adamw` or `sgd` (with momentum); biases and norm weights get no weight decay."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD momentum."""
    nesterov: bool = False
    """SGD: Nesterov momentum."""
    warmup_steps: int = Field(100, ge=0)
    """Steps the learning rate warms up over."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradients are clipped to this norm."""


# Continuing a pretrained model: small batches, a few hundred steps, the strategy's learning rate (as `lmtune train`).
ContinueTrainConfig = with_defaults(
    PretrainTrainConfig, "ContinueTrainConfig", "`PretrainTrainConfig` with defaults for continuing a pretrained model.",
    learning_rate=None, weight_decay=0.0, batch_size=4, seq_len=256, max_steps=200, eval_steps=100,
    checkpoint_every=50, warmup_steps=20,
)


class OutputConfig(StrictModel):
    dir: Annotated[str, LocalPath()] = "runs/pretrain/model"
    """The output folder: a normal model folder (config.json, weights, tokenizer) plus metrics.json."""
    overwrite: bool = False
    """Replace a finished output folder (only one lmtune made: it holds provenance.json)."""


def _streaming_needs_steps(corpus: CorpusConfig, train: PretrainTrainConfig) -> None:
    if corpus.streaming and not train.max_steps:
        raise ValueError("corpus.streaming=true needs train.max_steps (a stream has no known length)")


class PretrainRunConfig(StrictModel):
    """`lmtune pretrain model`: a language model from random weights on raw text."""

    corpus: CorpusConfig = CorpusConfig()
    """The raw training text and its held-out part."""
    tokenizer: TokenizerConfig = TokenizerConfig()
    """A tokenizer folder (`path`), or how to train one on the corpus first."""
    model: ArchConfig = ArchConfig()
    """Architecture and size."""
    train: PretrainTrainConfig = PretrainTrainConfig()
    """Optimiser and schedule, batch, sequence length, steps, evaluation, checkpoints."""
    output: OutputConfig = OutputConfig()
    """Where the model folder goes."""

    @model_validator(mode="after")
    def _check(self) -> PretrainRunConfig:
        _streaming_needs_steps(self.corpus, self.train)
        if self.train.learning_rate is None:
            raise ValueError("train.learning_rate=null takes a strategy's default, and a model trained from random "
                             "weights has no strategy: set train.learning_rate (e.g. 1e-3)")
        return self


class ContinueRunConfig(StrictModel):
    """`lmtune pretrain continue`: continued (domain-adaptive) pre-training of an existing causal LM."""

    model: Annotated[str, LocalPath(only_if_exists=True)] = "smollm2"
    """The model to continue: a bundled name (`smollm2`), a model folder or a .gguf file."""
    method: MethodSection = Field(default_factory=lambda: STRATEGIES.config_class(STRATEGIES.default)())
    """The strategy and its options, as in a run config (`method.name` picks it; `lmtune methods` lists them):
    e.g. {name: lora, rank: 16} or {name: full}. Adapters PEFT can merge are merged into the saved model."""
    save_adapter: bool = True
    """Also keep what the strategy trained alone, in its own format (PEFT's for adapters), under `adapter/`."""
    corpus: CorpusConfig = CorpusConfig()
    """Domain text and its held-out part (perplexity is measured on it before and after)."""
    train: ContinueTrainConfig = ContinueTrainConfig()
    """Optimiser and schedule, batch, sequence length, steps, evaluation, checkpoints."""
    output: OutputConfig = Field(default_factory=lambda: OutputConfig(dir="runs/pretrain/continue"))
    """Where the continued model folder goes."""

    @field_validator("method", mode="before")
    @classmethod
    def _strategy_config(cls, value: Any) -> Any:
        return named_section(value, STRATEGIES, "method", "{name: lora, rank: 8} or {name: full}")

    @model_validator(mode="after")
    def _check(self) -> ContinueRunConfig:
        _streaming_needs_steps(self.corpus, self.train)
        return self


TokenizerRunConfig.model_rebuild()
COMMAND_CONFIGS: dict[str, type[BaseModel]] = {
    "tokenizer": TokenizerRunConfig, "model": PretrainRunConfig, "continue": ContinueRunConfig,
}

# Keys of earlier versions and where their settings are now (the names `lmtune train` uses for the same setting).
MOVED_KEYS = {
    "optim.lr": "train.learning_rate", "optim.name": "train.optimizer", "optim.schedule": "train.lr_scheduler",
    "optim.weight_decay": "train.weight_decay", "optim.warmup_steps": "train.warmup_steps",
    "optim.max_grad_norm": "train.max_grad_norm", "optim.betas": "train.betas", "optim.momentum": "train.momentum",
    "optim.nesterov": "train.nesterov", "train.threads": "train.num_threads", "train.eval_every": "train.eval_steps",
    "lora.rank": "method.rank", "lora.alpha": "method.alpha", "lora.dropout": "method.dropout",
    "lora.target_modules": "method.target_modules",
}


def moved_keys(raw: dict) -> list[str]:
    """'old → new' for every key of `raw` that has moved."""
    found = []
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        if isinstance(raw.get(section), dict) and key in raw[section]:
            found.append(f"{old} is now {new}")
    if isinstance(raw.get("method"), str):
        found.append(f"method: {raw['method']} is now method.name: {raw['method']} (method is a section, as in a run config)")
    return found


def method_errors(raw: dict) -> str | None:
    """The `method` section checked against its strategy's config class alone, so that an unknown key gets that
    class's "did you mean" (the shared loader looks inside `method` of a run config only)."""
    from lmtune.config.loading import explain
    section = raw.get("method")
    if not isinstance(section, dict):
        return None
    try:
        cls = STRATEGIES.config_class(section.get("name", STRATEGIES.default))
    except ValueError:
        return None  # an unknown name: the whole config's validation names it, with "did you mean"
    holder = create_model("ContinueMethod", __base__=StrictModel, method=(cls, ...))
    try:
        holder.model_validate({"method": section})
    except ValidationError as err:
        return explain(err, {"method": section}, holder)
    return None


def load_pretrain_config(command: str, path: str | Path | None, overrides: list[str]):
    """YAML file + `a.b=c` overrides → the command's config; unknown keys get "did you mean", moved ones their
    new name."""
    from lmtune.config.loading import apply_overrides, explain, read_yaml

    root = COMMAND_CONFIGS[command]
    raw = apply_overrides(read_yaml(path) if path else {}, overrides)
    if moved := moved_keys(raw):
        raise LmtuneError(f"invalid `pretrain {command}` config: settings were renamed to the names `lmtune train` "
                          "uses:\n  " + "\n  ".join(moved))
    if command == "continue" and (message := method_errors(raw)):
        raise LmtuneError(message.replace("invalid config", "invalid `pretrain continue` config"))
    try:
        return resolve_paths(root.model_validate(raw))  # relative paths: to where lmtune runs (config/paths.py)
    except ValidationError as err:
        raise LmtuneError(explain(err, raw, root).replace("invalid config", f"invalid `pretrain {command}` config")) from None
