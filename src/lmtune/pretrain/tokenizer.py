"""Train a BPE, WordPiece or Unigram tokenizer with the `tokenizers` library; save it as a transformers tokenizer;
report tokens per word on held-out text against other tokenizers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmtune.errors import LmtuneError
from lmtune.pretrain.config import TokenizerConfig

DEFAULT_SPECIALS = {
    "decoder": {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"},
    "encoder": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
}


def special_tokens(cfg: TokenizerConfig) -> dict[str, str]:
    defaults = DEFAULT_SPECIALS[cfg.style]
    unknown = sorted(set(cfg.special_tokens) - set(defaults))
    if unknown:
        raise LmtuneError(f"tokenizer.special_tokens: {unknown} do not apply to style {cfg.style}; keys: {', '.join(defaults)}")
    return {**defaults, **cfg.special_tokens}


def _normalizer(cfg: TokenizerConfig):
    steps = []
    if cfg.unicode_normalization != "none":
        steps.append(getattr(normalizers, cfg.unicode_normalization.upper())())
    if cfg.strip_accents:
        steps += [normalizers.NFD(), normalizers.StripAccents()]
    if cfg.lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps) if steps else None


def _model_and_trainer(cfg: TokenizerConfig, specials: list[str], unk: str):
    common = {"vocab_size": cfg.vocab_size, "special_tokens": specials, "show_progress": False}
    if cfg.kind == "bpe":  # byte-level: every string is representable, no unknown token ever
        trainer = trainers.BpeTrainer(min_frequency=cfg.min_frequency, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **common)
        return models.BPE(), trainer, pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    if cfg.kind == "wordpiece":
        trainer = trainers.WordPieceTrainer(min_frequency=cfg.min_frequency, **common)
        return models.WordPiece(unk_token=unk), trainer, pre_tokenizers.BertPreTokenizer(), decoders.WordPiece()
    trainer = trainers.UnigramTrainer(unk_token=unk, **common)
    return models.Unigram(), trainer, pre_tokenizers.Metaspace(), decoders.Metaspace()


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> PreTrainedTokenizerFast:
    """A transformers fast tokenizer trained on `texts` (an iterator is fine: the corpus is streamed)."""
    named = special_tokens(cfg)
    ordered = list(dict.fromkeys([*named.values(), *cfg.extra_special_tokens]))
    model, trainer, pre_tokenizer, decoder = _model_and_trainer(cfg, ordered, named["unk"])
    raw = Tokenizer(model)
    normalizer = _normalizer(cfg)
    if normalizer is not None:
        raw.normalizer = normalizer
    raw.pre_tokenizer = pre_tokenizer
    raw.decoder = decoder
    raw.train_from_iterator(texts, trainer)
    if cfg.style == "encoder":
        cls, sep = raw.token_to_id(named["cls"]), raw.token_to_id(named["sep"])
        raw.post_processor = processors.TemplateProcessing(
            single=f"{named['cls']} $A {named['sep']}", pair=f"{named['cls']} $A {named['sep']} $B:1 {named['sep']}:1",
            special_tokens=[(named["cls"], cls), (named["sep"], sep)],
        )
        input_names = ["input_ids", "token_type_ids", "attention_mask"]
    else:
        input_names = ["input_ids", "attention_mask"]
    kwargs = {f"{key}_token": value for key, value in named.items()}
    # Extra special tokens are special in the raw tokenizer already (the trainer adds them as never-split tokens).
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, model_max_length=cfg.model_max_length, model_input_names=input_names, **kwargs,
    )
    return tokenizer


def load_any_tokenizer(name: str):
    """A tokenizer from a model name (`smollm2`, `minilm`), a model folder or a tokenizer folder."""
    from lmtune.config.schema import ModelConfig
    from lmtune.models.bundled import BUNDLED
    from lmtune.models.loading import resolve_model_path

    path = Path(name)
    if name not in BUNDLED and path.is_dir() and not (path / "config.json").is_file():
        return AutoTokenizer.from_pretrained(path)  # a tokenizer-only folder
    return AutoTokenizer.from_pretrained(resolve_model_path(ModelConfig(name=name)))


def tokens_per_word(tokenizer, texts: list[str]) -> dict[str, Any]:
    """Tokens (no special tokens) per whitespace-separated word, and the share of unknown tokens."""
    from lmtune.pretrain.packing import encode_text

    words = sum(len(t.split()) for t in texts)
    ids = [i for t in texts for i in encode_text(tokenizer, t)]
    unk = tokenizer.unk_token_id
    return {
        "words": words, "tokens": len(ids), "tokens_per_word": round(len(ids) / max(words, 1), 4),
        "unknown_rate": round(sum(1 for i in ids if unk is not None and i == unk) / max(len(ids), 1), 5),
        "vocab_size": len(tokenizer),
    }


def run_tokenizer(cfg) -> dict[str, Any]:
    """`lmtune pretrain tokenizer`: train, save, report."""
    from lmtune.io import save_pretrained_atomically, write_json, write_yaml
    from lmtune.pretrain.corpus import iter_pieces, read_texts

    out = Path(cfg.output.dir)
    if (out / "tokenizer_report.json").is_file() and not cfg.output.overwrite:
        raise LmtuneError(f"{out} holds a trained tokenizer; set output.overwrite=true or output.dir=<new folder>")
    started = time.perf_counter()
    tokenizer = train_tokenizer((p.text for p in iter_pieces(cfg.corpus, "train")), cfg.tokenizer)
    seconds = time.perf_counter() - started
    heldout = read_texts(cfg.corpus, "validation")
    report: dict[str, Any] = {"kind": cfg.tokenizer.kind, "train_seconds": round(seconds, 2), "heldout_chars": sum(map(len, heldout))}
    report["tokenizers"] = {"trained": tokens_per_word(tokenizer, heldout) if heldout else None}
    for name in cfg.compare_with:
        try:
            report["tokenizers"][name] = tokens_per_word(load_any_tokenizer(name), heldout) if heldout else None
        except (LmtuneError, OSError, ValueError) as err:
            report["tokenizers"][name] = {"error": str(err)}
    save_pretrained_atomically(out, tokenizer)
    write_yaml(out / "pretrain_tokenizer.yaml", cfg.model_dump(mode="json"))
    write_json(out / "tokenizer_report.json", report)
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{'tokenizer':<28} {'vocab':>7} {'tokens/word':>12} {'unknown':>8}"]
    for name, row in report["tokenizers"].items():
        if not row or "error" in row:
            lines.append(f"{name:<28} {(row or {}).get('error', 'no held-out text')}")
            continue
        lines.append(f"{name:<28} {row['vocab_size']:>7,} {row['tokens_per_word']:>12.3f} {row['unknown_rate']:>8.4f}")
    return "\n".join(lines)
