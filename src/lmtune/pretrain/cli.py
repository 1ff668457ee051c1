"""`lmtune pretrain {tokenizer,model,continue}`: arguments and entry point. Imports stay light here; the work is
imported in `run`."""

from __future__ import annotations

import argparse

COMMANDS = {
    "tokenizer": "train a BPE/WordPiece/Unigram tokenizer on raw text; tokens-per-word report vs. other tokenizers",
    "model": "pre-train a Llama/GPT-2/BERT/LSTM language model from random weights on raw text",
    "continue": "continued (domain-adaptive) pre-training of an existing model with a strategy (full, lora, ...); perplexity before/after",
}

EXAMPLES = """examples:
  lmtune pretrain tokenizer examples/pretrain_tokenizer.yaml tokenizer.vocab_size=8000
  lmtune pretrain model examples/pretrain_llama.yaml train.max_steps=600
  lmtune pretrain continue examples/pretrain_continue_smollm2.yaml method.rank=16
see docs/pretrain.md"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="pretrain_command", required=True, metavar="{tokenizer,model,continue}")
    for name, help_text in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("items", nargs="*", help="CONFIG.yaml (optional, first) and key.path=value overrides")
        cmd.add_argument("--print-config", action="store_true", help="print the resolved config and stop")


def run(args: argparse.Namespace) -> None:
    import json

    import yaml

    from lmtune.pretrain.config import load_pretrain_config

    items = list(args.items)
    path = items.pop(0) if items and "=" not in items[0] else None
    cfg = load_pretrain_config(args.pretrain_command, path, items)
    if args.print_config:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
        return
    if args.pretrain_command == "tokenizer":
        from lmtune.pretrain.tokenizer import format_report, run_tokenizer

        report = run_tokenizer(cfg)
        print(format_report(report))
        print(f"tokenizer folder: {cfg.output.dir}")
        return
    if args.pretrain_command == "model":
        from lmtune.pretrain.from_scratch import run_pretrain

        metrics = run_pretrain(cfg)
    else:
        from lmtune.pretrain.continue_ import run_continue

        metrics = run_continue(cfg)
    shown = {k: v for k, v in metrics.items() if k not in ("validation_history", "before", "packing")}
    print(json.dumps(shown, indent=2, default=str))
    if "model" in metrics.get("saved", ["model"]):
        print(f"model folder: {cfg.output.dir}  (fine-tune it: lmtune train model.name={cfg.output.dir} ...)")
    else:  # an adapter that cannot be merged (bottleneck, soft prompts): it is the result, on the base model
        print(f"adapter: {cfg.output.dir}/adapter  (on the base model {cfg.model}; nothing could be merged into it)")
