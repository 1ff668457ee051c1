"""Batched generation for evaluation and prediction: greedy by default, beam search on request.

transformers' `generate` does the decoding (KV cache, beams, EOS handling); this module only batches prompts,
pads them on the left (decoders continue from the last position) and cuts the text at stop strings.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from lmtune.config.schema import GenerationConfig


@contextmanager
def padding_side(tokenizer, side: str):
    previous = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        yield
    finally:
        tokenizer.padding_side = previous


def end_token_ids(model) -> list[int]:
    """Every id that ends a turn: the tokenizer's EOS and the model's generation config's (chat models differ)."""
    ids = {model.tokenizer.eos_token_id}
    configured = getattr(getattr(model.backbone.body, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def cut_at_stop(text: str, stops: list[str]) -> str:
    positions = [text.find(s) for s in stops if s and s in text]
    return text[: min(positions)] if positions else text


def needs_equal_lengths(body) -> bool:
    """PEFT's prompt-learning adapters (prompt tuning, p-tuning, prefix) put their virtual tokens before the
    left padding and drop position ids, so padding would shift a row's positions away from those it was trained
    with (measured: batched greedy output differed from one-row output). Such rows are batched only with rows of
    the same length: no padding, identical results, smaller batches."""
    config = getattr(body, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def length_batches(lengths: list[int], batch_size: int, equal_lengths: bool) -> list[list[int]]:
    """Row indices in batches, longest first, so a batch holds similar lengths and running out of memory
    happens at once, not at the end."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and (not equal_lengths or lengths[last[0]] == lengths[index]):
            last.append(index)
        else:
            batches.append([index])
    return batches


@torch.no_grad()
def generate_texts(
    model, prompts: list[str], cfg: GenerationConfig, add_special_tokens: bool = True,
    stops: list[str] | None = None, progress: bool = True,
) -> list[str]:
    """The model's continuation of each prompt, in the prompts' order."""
    tokenizer, body = model.tokenizer, model.body
    encoder_decoder = bool(getattr(model.backbone.body.config, "is_encoder_decoder", False))
    encoded = tokenizer(prompts, add_special_tokens=add_special_tokens, return_token_type_ids=False)["input_ids"]
    batches = length_batches([len(ids) for ids in encoded], cfg.batch_size, needs_equal_lengths(body))
    texts: list[str] = [""] * len(prompts)
    model.eval()
    bar = tqdm(total=len(prompts), desc="generating", unit="row", disable=not progress)
    with padding_side(tokenizer, "left"):
        for rows in batches:
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
            batch = {k: v.to(body.device) for k, v in batch.items()}
            output = body.generate(
                **batch, max_new_tokens=cfg.max_new_tokens, num_beams=cfg.num_beams, do_sample=False,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=end_token_ids(model),
            )
            # Decoders return prompt + continuation; encoder-decoders the decoder side only.
            new_tokens = output if encoder_decoder else output[:, batch["input_ids"].shape[1] :]
            for row, text in zip(rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                texts[row] = cut_at_stop(text, [*(stops or []), *cfg.stop]).strip()
            bar.update(len(rows))
    bar.close()
    return texts
