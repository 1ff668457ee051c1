"""`lmtune pretrain continue`: continued (domain-adaptive) pre-training of an existing causal LM on domain text,
full or with LoRA, with perplexity on held-out domain text before and after.

The result is a normal model folder either way: LoRA is merged into the weights (`merge_and_unload`), and the
adapter alone is kept under `adapter/` (PEFT format) for those who would rather ship the delta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, set_seed

from lmtune.errors import LmtuneError
from lmtune.io import save_pretrained_atomically, write_json, write_yaml
from lmtune.pretrain import loop
from lmtune.pretrain.config import ContinueRunConfig
from lmtune.pretrain.corpus import iter_pieces, read_texts
from lmtune.pretrain.packing import BlockDataset, CausalCollator, StreamingBlocks, pack_in_memory
from lmtune.pretrain.perplexity import perplexity_report


def load_causal_lm(name: str):
    from lmtune.config.schema import ModelConfig
    from lmtune.models.loading import load_tokenizer, resolve_model_path

    import lmtune.pretrain.lstm  # noqa: F401 - an LSTM folder pre-trained by lmtune continues like any other

    path = resolve_model_path(ModelConfig(name=name))
    try:
        model = AutoModelForCausalLM.from_pretrained(path)
    except ValueError as err:
        raise LmtuneError(f"{name} is not a causal LM; continued pre-training here is next-token prediction ({err})") from None
    return model, load_tokenizer(path), path


def apply_lora(model, cfg: ContinueRunConfig):
    from peft import LoraConfig, get_peft_model

    from lmtune.models.targets import default_lora_targets

    targets = cfg.lora.target_modules or default_lora_targets(model.config.model_type)
    peft_cfg = LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, peft_cfg)


def run_continue(cfg: ContinueRunConfig, callbacks=None) -> dict[str, Any]:
    out = loop.prepare_output(cfg.output, cfg.train.resume)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    set_seed(cfg.train.seed)
    model, tokenizer, path = load_causal_lm(cfg.model)
    validation = read_texts(cfg.corpus, "validation")
    if not validation:
        raise LmtuneError("no held-out domain text: set corpus.validation or corpus.validation_fraction > 0")
    seq_len = cfg.train.seq_len

    def measure() -> dict[str, Any]:
        return perplexity_report(model, tokenizer, validation, seq_len, "causal", cfg.train.eval_batch_size)

    before = measure()
    print(f"before: perplexity {before['perplexity']} per token, {before['word_perplexity']} per word "
          f"on {before['tokens']:,} held-out tokens")
    if cfg.method == "lora":
        model = apply_lora(model, cfg)
    else:
        for param in model.parameters():
            param.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"{cfg.method}: trainable {trainable:,} of {total:,} parameters")
    if cfg.corpus.streaming:
        data = StreamingBlocks(lambda: iter_pieces(cfg.corpus, "train"), tokenizer, seq_len, cfg.train.remainder,
                               cfg.corpus.shuffle_buffer, cfg.train.seed)
        packing: dict[str, Any] = {"streaming": True}
    else:
        blocks, packing = pack_in_memory(iter_pieces(cfg.corpus, "train"), tokenizer, seq_len, cfg.train.remainder)
        data = BlockDataset(blocks)
    write_yaml(out / "pretrain_continue.yaml", cfg.model_dump(mode="json"))
    result = loop.run_loop(model, data, CausalCollator(tokenizer.pad_token_id), cfg.train, cfg.optim, out, measure, callbacks,
                           initial=before)
    after = result["validation"]
    if cfg.method == "lora":
        if cfg.save_adapter:
            save_pretrained_atomically(out / "adapter", model)
        model = model.merge_and_unload()
    save_pretrained_atomically(out, model, tokenizer)
    metrics = {
        "command": "pretrain continue", "base_model": cfg.model, "base_path": str(path), "method": cfg.method,
        "trainable_params": trainable, "total_params": total, "packing": packing,
        "perplexity_before": before["perplexity"], "perplexity_after": after["perplexity"],
        "word_perplexity_before": before["word_perplexity"], "word_perplexity_after": after["word_perplexity"],
        "before": before, **{k: v for k, v in result.items() if k != "losses"},
        "first_loss": result["losses"][0][1] if result["losses"] else None,
        "last_loss": result["losses"][-1][1] if result["losses"] else None,
    }
    write_json(out / loop.METRICS_FILE, metrics)
    loop.finish(out)
    return metrics


def heldout_report(model_dir: str | Path, cfg: ContinueRunConfig) -> dict[str, Any]:
    """Perplexity of any causal LM folder on the config's held-out text (to check a saved result)."""
    model, tokenizer, _ = load_causal_lm(str(model_dir))
    return perplexity_report(model, tokenizer, read_texts(cfg.corpus, "validation"), cfg.train.seq_len, "causal",
                             cfg.train.eval_batch_size)
