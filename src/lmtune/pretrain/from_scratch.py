"""`lmtune pretrain model`: a language model from random weights on raw text. The output folder is a normal model
folder (config.json, model.safetensors, tokenizer) that `lmtune train model.name=<folder>` fine-tunes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, set_seed

from lmtune.errors import LmtuneError
from lmtune.io import save_pretrained_atomically
from lmtune.pretrain import loop
from lmtune.pretrain.architectures import build_architecture
from lmtune.pretrain.config import PretrainRunConfig
from lmtune.pretrain.corpus import corpus_hash, iter_pieces, read_texts
from lmtune.pretrain.packing import CausalCollator, training_data
from lmtune.pretrain.perplexity import perplexity_report
from lmtune.train.rundir import provenance_record

TOKENIZER_DIR = "tokenizer"


def prepare_tokenizer(cfg: PretrainRunConfig, out: Path, style: str) -> tuple[Any, bool]:
    """The configured tokenizer folder, the one a resumed run trained (out/tokenizer: the very same vocabulary),
    or one trained on the corpus now. True when it is new and still to be saved: only once the output folder is
    claimed, since an old output is replaced only after everything has loaded."""
    from lmtune.pretrain.tokenizer import load_any_tokenizer, train_tokenizer

    trained = False
    if cfg.tokenizer.path:
        tokenizer = load_any_tokenizer(cfg.tokenizer.path)
    elif cfg.train.resume and (out / TOKENIZER_DIR / "tokenizer.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(out / TOKENIZER_DIR)
    else:
        options = cfg.tokenizer.model_copy(update={"style": style, "model_max_length": cfg.model.max_positions})
        started = time.perf_counter()
        tokenizer = train_tokenizer((p.text for p in iter_pieces(cfg.corpus, "train")), options)
        print(f"trained a {options.kind} tokenizer ({len(tokenizer):,} tokens) in {time.perf_counter() - started:.1f} s")
        trained = True
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if style == "encoder" and tokenizer.mask_token is None:
        raise LmtuneError(f"{cfg.model.arch} trains with masked LM and needs a tokenizer with a mask token "
                          "(train one with tokenizer.style=encoder)")
    return tokenizer, trained


def collator_for(objective: str, tokenizer, mlm_probability: float):
    if objective == "masked":
        from transformers import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability)
    return CausalCollator(tokenizer.pad_token_id)


def run_pretrain(cfg: PretrainRunConfig, callbacks=None) -> dict[str, Any]:
    out = loop.check_output(cfg, "model")
    loop.configure_threads(cfg.train.num_threads)
    arch = build_architecture(cfg.model)
    tokenizer, new_tokenizer = prepare_tokenizer(cfg, out, arch.tokenizer_style)
    data, packing = training_data(cfg.corpus, cfg.train, tokenizer)  # a bad corpus fails here, nothing changed yet
    if not packing["streaming"]:
        print(f"packed {packing['tokens']:,} tokens into {packing['blocks']:,} blocks of {packing['seq_len']} "
              f"({packing['dropped_tokens']} tokens in the dropped remainder)")
    validation = read_texts(cfg.corpus, "validation")
    set_seed(cfg.train.seed)
    model = arch.build(tokenizer)
    params = sum(p.numel() for p in model.parameters())
    print(f"{cfg.model.arch}: {arch.summary}; {params:,} parameters; vocabulary {len(tokenizer):,}")
    objective = arch.objective

    def measure() -> dict[str, Any]:
        return perplexity_report(model, tokenizer, validation, cfg.train.seq_len, objective, cfg.train.eval_batch_size,
                                 cfg.train.mlm_probability, cfg.train.seed)

    provenance = provenance_record(None, corpus_hash(cfg.corpus), cfg.train.seed, f"from scratch: {cfg.model.arch}")
    loop.claim_output(out, cfg, "model", provenance)
    if new_tokenizer:
        save_pretrained_atomically(out / TOKENIZER_DIR, tokenizer)
    result = loop.run_loop(model, data, collator_for(objective, tokenizer, cfg.train.mlm_probability), cfg.train,
                           out, measure if validation else None, callbacks)
    save_pretrained_atomically(out, model, tokenizer)
    metrics = {
        "command": "pretrain model", "arch": cfg.model.arch, "objective": objective, "parameters": params,
        "vocab_size": len(tokenizer), "packing": packing, **{k: v for k, v in result.items() if k != "losses"},
    }
    loop.finish(out, metrics, cfg.train.keep_checkpoints)
    return metrics
