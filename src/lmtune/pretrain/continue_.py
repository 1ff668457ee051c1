"""`lmtune pretrain continue`: continued (domain-adaptive) pre-training of an existing causal LM on domain text,
with any strategy that trains a causal LM (`method:` as in a run config: full, lora, bottleneck, freeze with
`train_last_layers`, ...), and perplexity on held-out domain text before and after.

The model is what a generative task trains: the whole LM as the body of a `TaskModel` with an empty head (PEFT
wraps it as CAUSAL_LM), so `STRATEGIES.build(...).apply` and `.save` do the strategy's work here as in
`lmtune train`. The result is a normal model folder wherever one exists: adapters PEFT can merge (LoRA) are merged
into the weights; what the strategy trained is also kept alone under `adapter/`, in its own format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import set_seed

from lmtune.config.schema import ModelConfig
from lmtune.errors import LmtuneError
from lmtune.io import save_pretrained_atomically
from lmtune.methods import STRATEGIES
from lmtune.models.loading import load_backbone, load_tokenizer, resolve_model_path
from lmtune.pretrain import loop
from lmtune.pretrain.config import ContinueRunConfig
from lmtune.pretrain.corpus import corpus_hash, read_texts
from lmtune.pretrain.packing import CausalCollator, training_data
from lmtune.pretrain.perplexity import perplexity_report
from lmtune.tasks.generative import GenerativeModel
from lmtune.train.rundir import base_model_record, provenance_record
from lmtune.train.trainer import LmtuneTrainer

ADAPTER_DIR = "adapter"


def load_causal_lm(name: str, seed: int = 0) -> GenerativeModel:
    """The LM as a task model with an empty head: what strategies apply to."""
    backbone = load_backbone(ModelConfig(name=name), "AutoModelForCausalLM", seed)
    if backbone.body.config.is_encoder_decoder:
        raise LmtuneError(f"{name} ({backbone.model_type}) is an encoder-decoder; continued pre-training here is "
                          "next-token prediction of a causal LM (a decoder such as smollm2)")
    return GenerativeModel(backbone)


def plain_model(body):
    """The body as a plain transformers model: itself when no adapter wraps it (full, freeze), merged where PEFT
    can merge its adapter (LoRA); None where it cannot (bottleneck adapters are non-linear, soft prompts are no
    weights)."""
    from peft import PeftModel

    if not isinstance(body, PeftModel):
        return body
    try:
        return body.merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError):
        return None


def save_result(model: GenerativeModel, strategy, out: Path, save_adapter: bool) -> list[str]:
    """The model folder (merged where possible) and, when asked or when nothing merges, the strategy's own files
    under adapter/. Returns what was written, for metrics.json."""
    saved: list[str] = []
    if save_adapter and strategy.serve_kind != "full_model":  # a whole-model artifact would be a second copy
        strategy.save(model, out / ADAPTER_DIR)
        saved.append(ADAPTER_DIR)
    plain = plain_model(model.body)  # after the adapter is saved: merging removes it
    if plain is None:
        if not saved:
            strategy.save(model, out / ADAPTER_DIR)
            saved.append(ADAPTER_DIR)
        print(f"{strategy.name}: the adapter cannot be merged into the weights; the result is {out / ADAPTER_DIR} "
              f"(load it onto {model.backbone.model_id})")
        save_pretrained_atomically(out, model.tokenizer)
        return saved
    save_pretrained_atomically(out, plain, model.tokenizer)
    return ["model", *saved]


def run_continue(cfg: ContinueRunConfig, callbacks=None) -> dict[str, Any]:
    strategy = STRATEGIES.build(cfg.method.name, cfg.method)
    # The strategy's learning rate is resolved before the resume check, which compares resolved configs.
    cfg = cfg.updated({"train.learning_rate": cfg.train.learning_rate or strategy.default_learning_rate})
    out = loop.check_output(cfg, "continue")
    loop.configure_threads(cfg.train.num_threads)
    set_seed(cfg.train.seed)
    # The data is read and checked before the model loads and before any old output is replaced.
    tokenizer = load_tokenizer(resolve_model_path(ModelConfig(name=cfg.model)))
    validation = read_texts(cfg.corpus, "validation")
    if not validation:
        raise LmtuneError("no held-out domain text: set corpus.validation or corpus.validation_fraction > 0")
    data, packing = training_data(cfg.corpus, cfg.train, tokenizer)
    model = load_causal_lm(cfg.model, cfg.train.seed)

    def measure() -> dict[str, Any]:
        return perplexity_report(model, tokenizer, validation, cfg.train.seq_len, "causal", cfg.train.eval_batch_size)

    before = measure()
    print(f"before: perplexity {before['perplexity']} per token, {before['word_perplexity']} per word "
          f"on {before['tokens']:,} held-out tokens")
    model = strategy.apply(model)
    counts = model.parameter_counts()
    print(f"{strategy.name}: {strategy.describe()}; trainable {counts['trainable_params']:,} of "
          f"{counts['total_params']:,} parameters; learning rate {cfg.train.learning_rate}")
    provenance = provenance_record(base_model_record(model.backbone), corpus_hash(cfg.corpus), cfg.train.seed,
                                   strategy.name)
    loop.claim_output(out, cfg, "continue", provenance)
    result = loop.run_loop(model, data, CausalCollator(tokenizer.pad_token_id), cfg.train, out, measure, callbacks,
                           initial=before, trainer_class=LmtuneTrainer)
    after = result["validation"]
    saved = save_result(model, strategy, out, cfg.save_adapter)
    metrics = {
        "command": "pretrain continue", "base_model": cfg.model, "base_path": str(model.backbone.path),
        "method": strategy.name, "serve_kind": strategy.serve_kind, "saved": saved, **counts, "packing": packing,
        "perplexity_before": before["perplexity"], "perplexity_after": after["perplexity"],
        "word_perplexity_before": before["word_perplexity"], "word_perplexity_after": after["word_perplexity"],
        "before": before, **{k: v for k, v in result.items() if k != "losses"},
    }
    loop.finish(out, metrics, cfg.train.keep_checkpoints)
    return metrics


def heldout_report(model_dir: str | Path, cfg: ContinueRunConfig) -> dict[str, Any]:
    """Perplexity of any causal LM folder on the config's held-out text (to check a saved result)."""
    model = load_causal_lm(str(model_dir))
    return perplexity_report(model, model.tokenizer, read_texts(cfg.corpus, "validation"), cfg.train.seq_len, "causal",
                             cfg.train.eval_batch_size)
