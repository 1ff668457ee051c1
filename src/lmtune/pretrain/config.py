"""Configs of `lmtune pretrain {tokenizer,model,continue}`: pydantic, unknown keys refused, a docstring per field."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from lmtune.config.paths import LocalPath, resolve_paths
from lmtune.config.schema import StrictModel
from lmtune.errors import LmtuneError


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


class ArchConfig(StrictModel):
    arch: str = "llama"
    """The network: `llama` or `gpt2` (decoder, causal LM), `bert` (encoder, masked LM), `lstm` (recurrent LM)."""
    layers: int = Field(4, gt=0)
    """Transformer blocks or LSTM layers."""
    hidden: int = Field(256, gt=0)
    """Hidden size (also the embedding size)."""
    heads: int = Field(4, gt=0)
    """Attention heads (transformers only)."""
    kv_heads: int | None = Field(None, gt=0)
    """Llama only: key/value heads (grouped-query attention); none uses `heads`."""
    intermediate: int | None = Field(None, gt=0)
    """Feed-forward width; none takes 4 × hidden (GPT-2, BERT) or about 8/3 × hidden (Llama)."""
    max_positions: int = Field(512, gt=0)
    """Longest sequence the model can take (position embeddings, RoPE cache); fine-tuning inputs too."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout (GPT-2, BERT, LSTM; Llama has none)."""
    tie_embeddings: bool = True
    """Share the input embedding and the output layer's weights."""

    @field_validator("arch")
    @classmethod
    def _registered(cls, value: str) -> str:
        from lmtune.pretrain.architectures import _ARCHITECTURES

        _ARCHITECTURES.get(value)  # unknown names: "did you mean", and the known ones
        return value


class OptimConfig(StrictModel):
    name: Literal["adamw", "sgd"] = "adamw"
    """`adamw` or `sgd` (with momentum)."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD momentum."""
    nesterov: bool = False
    """SGD: Nesterov momentum."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    weight_decay: float = Field(0.01, ge=0)
    """Weight decay (decoupled for AdamW)."""
    schedule: str = "cosine"
    """A transformers scheduler name: cosine, linear, constant, constant_with_warmup, ..."""
    warmup_steps: int = Field(100, ge=0)
    """Steps the learning rate warms up over."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradients are clipped to this norm."""


class LoopConfig(StrictModel):
    batch_size: int = Field(16, gt=0)
    """Packed blocks per optimiser step."""
    seq_len: int = Field(128, gt=1)
    """Tokens per packed block."""
    max_steps: int | None = Field(None, gt=0)
    """Optimiser steps; overrides `epochs` (required when streaming)."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the packed corpus when `max_steps` is not set."""
    eval_every: int = Field(200, gt=0)
    """Steps between validation perplexity measurements (also at the start and the end)."""
    checkpoint_every: int = Field(200, gt=0)
    """Steps between checkpoints (model, optimiser, scheduler and RNG state) a killed run resumes from."""
    resume: bool = False
    """Continue a killed run from its last checkpoint (same output folder)."""
    remainder: Literal["drop", "pad"] = "drop"
    """Packing: the last, partial block is dropped (`drop`, its token count is reported) or padded (`pad`, the
    padding is masked out of the loss)."""
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    """Masked-LM objective (BERT): share of tokens masked."""
    threads: int | None = Field(None, gt=0)
    """CPU threads for torch; none uses all cores."""
    seed: int = 0
    """Seeds weights, data order, masks and dropout."""
    logging_steps: int = Field(20, gt=0)
    """Steps between loss log lines."""
    eval_batch_size: int = Field(8, gt=0)
    """Blocks per batch when measuring perplexity."""
    progress: bool = True
    """Show a progress bar with rate and ETA."""


class OutputConfig(StrictModel):
    dir: Annotated[str, LocalPath()] = "runs/pretrain/model"
    """The output folder: a normal model folder (config.json, weights, tokenizer) plus metrics.json."""
    overwrite: bool = False
    """Replace a finished output folder."""


class PretrainRunConfig(StrictModel):
    """`lmtune pretrain model`: a language model from random weights on raw text."""

    corpus: CorpusConfig = CorpusConfig()
    """The raw training text and its held-out part."""
    tokenizer: TokenizerConfig = TokenizerConfig()
    """A tokenizer folder (`path`), or how to train one on the corpus first."""
    model: ArchConfig = ArchConfig()
    """Architecture and size."""
    optim: OptimConfig = OptimConfig()
    """Optimiser and learning-rate schedule."""
    train: LoopConfig = LoopConfig()
    """Batch, sequence length, steps, evaluation, checkpoints."""
    output: OutputConfig = OutputConfig()
    """Where the model folder goes."""

    @model_validator(mode="after")
    def _streaming_needs_steps(self) -> "PretrainRunConfig":
        if self.corpus.streaming and not self.train.max_steps:
            raise ValueError("corpus.streaming=true needs train.max_steps (a stream has no known length)")
        return self


class LoraOptions(StrictModel):
    rank: int = Field(16, gt=0)
    """LoRA rank."""
    alpha: float = Field(32, gt=0)
    """LoRA scaling numerator (scale = alpha / rank)."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: list[str] | str | None = None
    """Modules LoRA wraps; none takes lmtune's default for the architecture (every linear map in the blocks)."""


class ContinueRunConfig(StrictModel):
    """`lmtune pretrain continue`: continued (domain-adaptive) pre-training of an existing causal LM."""

    model: Annotated[str, LocalPath(only_if_exists=True)] = "smollm2"
    """The model to continue: a bundled name (`smollm2`), a model folder or a .gguf file."""
    method: Literal["full", "lora"] = "lora"
    """Train every weight (`full`) or LoRA adapters (`lora`, merged into the saved model)."""
    lora: LoraOptions = LoraOptions()
    """LoRA options (method `lora`)."""
    save_adapter: bool = True
    """LoRA: also keep the adapter alone (PEFT format) under `adapter/`."""
    corpus: CorpusConfig = CorpusConfig()
    """Domain text and its held-out part (perplexity is measured on it before and after)."""
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=2e-4, warmup_steps=20, weight_decay=0.0))
    """Optimiser and schedule."""
    train: LoopConfig = Field(default_factory=lambda: LoopConfig(batch_size=4, seq_len=256, max_steps=200, eval_every=100, checkpoint_every=50))
    """Batch, sequence length, steps, checkpoints."""
    output: OutputConfig = Field(default_factory=lambda: OutputConfig(dir="runs/pretrain/continue"))
    """Where the continued model folder goes."""

    @model_validator(mode="after")
    def _streaming_needs_steps(self) -> "ContinueRunConfig":
        if self.corpus.streaming and not self.train.max_steps:
            raise ValueError("corpus.streaming=true needs train.max_steps (a stream has no known length)")
        return self


TokenizerRunConfig.model_rebuild()
COMMAND_CONFIGS: dict[str, type[BaseModel]] = {
    "tokenizer": TokenizerRunConfig, "model": PretrainRunConfig, "continue": ContinueRunConfig,
}


def load_pretrain_config(command: str, path: str | Path | None, overrides: list[str]):
    """YAML file + `a.b=c` overrides → the command's config; unknown keys get "did you mean"."""
    from lmtune.config.loading import apply_overrides, explain, read_yaml

    root = COMMAND_CONFIGS[command]
    raw = apply_overrides(read_yaml(path) if path else {}, overrides)
    try:
        return resolve_paths(root.model_validate(raw))  # relative paths: to where lmtune runs (config/paths.py)
    except ValidationError as err:
        raise LmtuneError(explain(err, raw, root).replace("invalid config", f"invalid `pretrain {command}` config")) from None
