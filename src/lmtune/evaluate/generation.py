"""Batched generation for evaluation and prediction: greedy by default, beam search on request.

transformers' `generate` does the decoding (KV cache, beams, EOS handling); this module only batches prompts,
pads them on the left (decoders continue from the last position) and cuts the text at stop strings.
The adapter's form (`lmtune.forms`) picks how: `generate` itself, `generate` after a soft prompt placed as the
server places it, or a full forward per token.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from lmtune.config.schema import GenerationConfig
from lmtune.device import to_model_device
from lmtune.forms import form_of_body, place_rows


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
    return end_ids_of(model.tokenizer, model.backbone.body)


def end_ids_of(tokenizer, lm) -> list[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(lm, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def cut_at_stop(text: str, stops: list[str]) -> str:
    positions = [text.find(s) for s in stops if s and s in text]
    return text[: min(positions)] if positions else text


def decode_path(body, encoder_decoder: bool) -> str:
    """How to generate with this body: its adapter's form says (`lmtune.forms.Form.decode`). Encoder-decoders
    always take `generate`: they pad on the right, as in training, and PEFT places their soft prompts itself."""
    return "cached" if encoder_decoder else form_of_body(body).decode


@torch.no_grad()
def generate_by_full_forward(model, batch: dict, max_new_tokens: int, end_ids: list[int], pad_id: int) -> torch.Tensor:
    """Greedy decoding by a full forward per new token (no cache): slow, and exactly what training computes.
    Rows of one batch have the same length (no padding); a finished row continues with padding."""
    ids = batch["input_ids"]
    start, done = ids.shape[1], torch.zeros(ids.size(0), dtype=torch.bool, device=ids.device)
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1]
        next_ids = torch.where(done, torch.full_like(done, pad_id, dtype=ids.dtype), logits.argmax(-1))
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        done |= torch.isin(next_ids, torch.tensor(end_ids, device=ids.device))
        if bool(done.all()):
            break
    return ids[:, start:]


def generate_after_soft_prompt(body, token_rows: list[list[int]], pad_id: int, **options) -> torch.Tensor:
    """Generate after the adapter's soft prompt, placed the way the server places it (`lmtune.forms.place_rows`:
    [pad][virtual][text], positions read from the attention mask), so a row's output does not depend on the batch.
    PEFT's own `generate` puts the soft prompt before the left padding. Returns the new tokens only."""
    lm = body.get_base_model()
    soft = body.get_prompt(batch_size=1)[0]  # [virtual, hidden]: a prompt encoder's output where there is one
    embeds, mask, _ = place_rows(lm.get_input_embeddings(), token_rows, [soft] * len(token_rows), True, pad_id)
    return lm.generate(inputs_embeds=embeds, attention_mask=mask, **options)


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
    decode = decode_path(body, encoder_decoder)
    full_forward = decode == "full_forward"
    if full_forward and cfg.num_beams > 1:
        print("this adapter generates greedily (a full forward per token; see lmtune.forms.Form.decode): "
              "num_beams ignored")
    batches = length_batches([len(ids) for ids in encoded], cfg.batch_size, equal_lengths=full_forward)
    options = dict(max_new_tokens=cfg.max_new_tokens, num_beams=cfg.num_beams, do_sample=False,
                   pad_token_id=tokenizer.pad_token_id, eos_token_id=end_token_ids(model))
    texts: list[str] = [""] * len(prompts)
    model.eval()
    bar = tqdm(total=len(prompts), desc="generating", unit="row", disable=not progress)
    # Decoders continue from the last position, so they pad on the left; encoder-decoders pad like in training.
    with padding_side(tokenizer, "right" if encoder_decoder else "left"):
        for rows in batches:
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
            batch = to_model_device(dict(batch), body)
            if full_forward:
                new_tokens = generate_by_full_forward(model, batch, cfg.max_new_tokens, options["eos_token_id"],
                                                      tokenizer.pad_token_id)
            elif decode == "after_soft_prompt":
                new_tokens = generate_after_soft_prompt(body, [encoded[i] for i in rows], tokenizer.pad_token_id,
                                                        **options)
            else:
                output = body.generate(**batch, **options)
                # Decoders return prompt + continuation; encoder-decoders the decoder side only.
                new_tokens = output if encoder_decoder else output[:, batch["input_ids"].shape[1] :]
            for row, text in zip(rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                texts[row] = cut_at_stop(text, [*(stops or []), *cfg.stop]).strip()
            bar.update(len(rows))
    bar.close()
    return texts
