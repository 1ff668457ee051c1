"""Tiny random models (Llama-, GPT-2- and BERT-style) with a word-level tokenizer trained on given texts.

Tests build these in a temp folder and load them through the normal `model.name: <folder>` path, so nothing is
downloaded and every code path a real model takes is exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

Arch = Literal["llama", "gpt2", "bert", "t5"]
ARCHES: tuple[Arch, ...] = ("llama", "gpt2", "bert")
"""The architectures every strategy is tested on; `t5` (encoder-decoder) is built for generative tests."""
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"]


def build_tokenizer(texts: Iterable[str], arch: Arch, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.normalizer = normalizers.Lowercase()
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
    if arch == "bert":
        cls, sep = raw.token_to_id("[CLS]"), raw.token_to_id("[SEP]")
        raw.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
            sep_token="[SEP]", mask_token="[MASK]", model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )
    if arch == "t5":  # T5 ends every sequence with </s>, inputs and targets alike
        raw.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", raw.token_to_id("</s>"))])
        return PreTrainedTokenizerFast(
            tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>",
            model_input_names=["input_ids", "attention_mask"],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>", eos_token="</s>",
        model_input_names=["input_ids", "attention_mask"],
    )


def tiny_config(arch: Arch, vocab_size: int, pad_id: int, hidden: int = 32, layers: int = 2, heads: int = 4, eos_id: int | None = None):
    if arch == "t5":
        return T5Config(
            vocab_size=vocab_size, d_model=hidden, d_kv=hidden // heads, d_ff=2 * hidden, num_layers=layers,
            num_heads=heads, pad_token_id=pad_id, eos_token_id=eos_id, decoder_start_token_id=pad_id,
        )
    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=256, pad_token_id=pad_id,
            bos_token_id=None, eos_token_id=eos_id,
        )
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=256, pad_token_id=pad_id,
            bos_token_id=None, eos_token_id=eos_id,
        )
    return BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=256, pad_token_id=pad_id,
    )


MODEL_CLASSES = {"llama": LlamaForCausalLM, "gpt2": GPT2LMHeadModel, "bert": BertForMaskedLM, "t5": T5ForConditionalGeneration}


def build_tiny_model(arch: Arch, folder: str | Path, texts: Iterable[str], seed: int = 0, **sizes) -> Path:
    """Write a tiny random `arch` model and its tokenizer to `folder`; return the folder."""
    folder = Path(folder)
    tokenizer = build_tokenizer(texts, arch)
    torch.manual_seed(seed)
    config = tiny_config(arch, len(tokenizer), tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id, **sizes)
    model = MODEL_CLASSES[arch](config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
