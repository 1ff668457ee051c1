"""`lmtune pretrain model`: a language model from random weights on raw text. The output folder is a normal model
folder (config.json, model.safetensors, tokenizer) that `lmtune train model.name=<folder>` fine-tunes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, set_seed

from lmtune.errors import LmtuneError
from lmtune.io import save_pretrained_atomically, write_json, write_yaml
from lmtune.pretrain import loop
from lmtune.pretrain.architectures import build_architecture
from lmtune.pretrain.config import PretrainRunConfig
from lmtune.pretrain.corpus import iter_pieces, read_texts
from lmtune.pretrain.packing import BlockDataset, CausalCollator, StreamingBlocks, pack_in_memory
from lmtune.pretrain.perplexity import perplexity_report

TOKENIZER_DIR = "tokenizer"


def prepare_tokenizer(cfg: PretrainRunConfig, out: Path, style: str):
    """The configured tokenizer folder, or one trained on the corpus (kept in out/tokenizer so a resumed run uses
    the very same vocabulary)."""
    from lmtune.pretrain.tokenizer import load_any_tokenizer, train_tokenizer

    if cfg.tokenizer.path:
        tokenizer = load_any_tokenizer(cfg.tokenizer.path)
    elif (out / TOKENIZER_DIR / "tokenizer.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(out / TOKENIZER_DIR)
    else:
        options = cfg.tokenizer.model_copy(update={"style": style, "model_max_length": cfg.model.max_positions})
        started = time.perf_counter()
        tokenizer = train_tokenizer((p.text for p in iter_pieces(cfg.corpus, "train")), options)
        print(f"trained a {options.kind} tokenizer ({len(tokenizer):,} tokens) in {time.perf_counter() - started:.1f} s")
        save_pretrained_atomically(out / TOKENIZER_DIR, tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if style == "encoder" and tokenizer.mask_token is None:
        raise LmtuneError(f"{cfg.model.arch} trains with masked LM and needs a tokenizer with a mask token "
                          "(train one with tokenizer.style=encoder)")
    return tokenizer


def training_data(cfg: PretrainRunConfig, tokenizer) -> tuple[Any, dict[str, Any]]:
    seq_len, remainder = cfg.train.seq_len, cfg.train.remainder
    if cfg.corpus.streaming:
        data = StreamingBlocks(lambda: iter_pieces(cfg.corpus, "train"), tokenizer, seq_len, remainder,
                               cfg.corpus.shuffle_buffer, cfg.train.seed)
        return data, {"streaming": True, "seq_len": seq_len}
    blocks, report = pack_in_memory(iter_pieces(cfg.corpus, "train"), tokenizer, seq_len, remainder)
    if not blocks:
        raise LmtuneError(f"the corpus gave {report['tokens']} tokens: not one block of train.seq_len={seq_len}")
    return BlockDataset(blocks), {"streaming": False, **report}


def collator_for(objective: str, tokenizer, mlm_probability: float):
    if objective == "masked":
        from transformers import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability)
    return CausalCollator(tokenizer.pad_token_id)


def run_pretrain(cfg: PretrainRunConfig, callbacks=None) -> dict[str, Any]:
    out = loop.prepare_output(cfg.output, cfg.train.resume)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    arch = build_architecture(cfg.model)
    tokenizer = prepare_tokenizer(cfg, out, arch.tokenizer_style)
    set_seed(cfg.train.seed)
    model = arch.build(tokenizer)
    params = sum(p.numel() for p in model.parameters())
    print(f"{cfg.model.arch}: {arch.summary}; {params:,} parameters; vocabulary {len(tokenizer):,}")
    data, packing = training_data(cfg, tokenizer)
    if not packing["streaming"]:
        print(f"packed {packing['tokens']:,} tokens into {packing['blocks']:,} blocks of {packing['seq_len']} "
              f"({packing['dropped_tokens']} tokens in the dropped remainder)")
    validation = read_texts(cfg.corpus, "validation")
    objective = arch.objective

    def measure() -> dict[str, Any]:
        return perplexity_report(model, tokenizer, validation, cfg.train.seq_len, objective, cfg.train.eval_batch_size,
                                 cfg.train.mlm_probability, cfg.train.seed)

    write_yaml(out / "pretrain.yaml", cfg.model_dump(mode="json"))
    result = loop.run_loop(model, data, collator_for(objective, tokenizer, cfg.train.mlm_probability), cfg.train,
                           cfg.optim, out, measure if validation else None, callbacks)
    save_pretrained_atomically(out, model, tokenizer)
    metrics = {
        "command": "pretrain model", "arch": cfg.model.arch, "objective": objective, "parameters": params,
        "vocab_size": len(tokenizer), "packing": packing, **{k: v for k, v in result.items() if k != "losses"},
        "first_loss": result["losses"][0][1] if result["losses"] else None,
        "last_loss": result["losses"][-1][1] if result["losses"] else None,
    }
    write_json(out / loop.METRICS_FILE, metrics)  # last: marks a finished run
    loop.finish(out)
    return metrics
