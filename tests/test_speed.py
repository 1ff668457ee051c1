"""The speed switches (lmtune.train.speed): every fast path gives the plain path's loss and gradients."""

from __future__ import annotations

import importlib.util

import datasets
import pytest
import torch
from transformers import DataCollatorWithFlattening
from transformers.trainer_pt_utils import LengthGroupedSampler

from lmtune.errors import LmtuneError
from lmtune.methods import STRATEGIES
from lmtune.models.loading import load_backbone
from lmtune.runconfig import build_task
from lmtune.train import speed
from test_generative import WORDS, gen_config, gen_data, gen_models  # noqa: F401 (fixtures)


def built(cfg):
    task = build_task(cfg)
    model = task.build_model(load_backbone(cfg.model, task.backbone_class, cfg.train.seed))
    return task, STRATEGIES.build(cfg.method.name, cfg.method).apply(model)


def loss_and_grads(model, batch, num_items=None):
    model.zero_grad()
    output = model(**batch, num_items_in_batch=num_items)
    output.loss.backward()
    return output.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_same(reference, other):
    torch.testing.assert_close(other[0], reference[0], rtol=1e-5, atol=1e-6)
    assert reference[1].keys() == other[1].keys() and reference[1]
    for name, grad in reference[1].items():
        torch.testing.assert_close(other[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def rows_of_different_lengths(task, model, count: int = 5):
    """Encoded copy-task rows whose prompts and responses have different lengths."""
    records = [{"instruction": "copy " + " ".join(WORDS[: 1 + 2 * i]), "input": "",
                "output": "the answer is " + " ".join(str(d) for d in range(i + 1)), "answer": str(i)}
               for i in range(count)]
    rows = list(task.encode(datasets.Dataset.from_list(records), model.tokenizer))
    assert len({len(r["input_ids"]) for r in rows}) == count
    return rows


@pytest.mark.parametrize("train_on_inputs", [False, True], ids=["response-loss", "train-on-inputs"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_packed_rows_and_labelled_logits_give_the_padded_loss(gen_models, gen_data, tmp_path, arch, train_on_inputs):  # noqa: F811
    cfg = gen_config(gen_models[arch], gen_data, tmp_path, {"name": "lora", "dropout": 0.0})
    task, model = built(cfg.updated({"task.train_on_inputs": train_on_inputs}))
    model.eval()  # no dropout: the paths must agree exactly
    rows = rows_of_different_lengths(task, model)
    padded = task.collator(model.tokenizer)(rows)
    packed = DataCollatorWithFlattening(separator_id=-100)(rows)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert int(padded["attention_mask"].sum()) == packed["input_ids"].shape[1] < padded["input_ids"].numel()
    assert model.can_keep_logits()
    reference = loss_and_grads(model, padded)
    count = int((padded["labels"][:, 1:] != -100).sum())
    for labelled in (False, True):
        model.labelled_logits_only = labelled
        for batch in (padded, packed):
            assert_same(reference, loss_and_grads(model, batch))
            # under gradient accumulation Trainer passes the token count: a sum over it, not a mean per batch
            summed = loss_and_grads(model, batch, num_items=torch.tensor(2 * count))
            assert_same((reference[0] / 2, {k: g / 2 for k, g in reference[1].items()}), summed)


def test_labelled_logits_leave_out_the_prompt_positions(gen_models, gen_data, tmp_path):  # noqa: F811
    task, model = built(gen_config(gen_models["llama"], gen_data, tmp_path, {"name": "lora"}))
    rows = rows_of_different_lengths(task, model)
    packed = DataCollatorWithFlattening(separator_id=-100)(rows)
    padded = task.collator(model.tokenizer)(rows)
    model.labelled_logits_only = True
    for batch in (packed, padded):  # row by row: no logits for another row's prompt, nor for padding
        logits = model(**batch).logits
        assert logits.shape[0] == int((batch["labels"][:, 1:] != -100).sum()) < batch["input_ids"].numel() // 2


def test_packing_applies_to_decoders_and_is_refused_where_it_would_mix_rows(gen_models, gen_data, tmp_path):  # noqa: F811
    cfg = gen_config(gen_models["llama"], gen_data, tmp_path, {"name": "lora"})
    task, model = built(cfg)
    assert speed.packing_blocker(model) is None
    # exact on sdpa, but auto packs only where the kernel skips the pairs across rows
    assert not isinstance(speed.train_collator(cfg.train, task, model), DataCollatorWithFlattening)
    assert isinstance(speed.train_collator(cfg.train.updated({"packing": True}), task, model), DataCollatorWithFlattening)
    model.body.get_base_model().config._attn_implementation = "flex_attention"
    assert isinstance(speed.train_collator(cfg.train, task, model), DataCollatorWithFlattening)
    assert not isinstance(speed.train_collator(cfg.train.updated({"packing": False}), task, model),
                          DataCollatorWithFlattening)
    prompt_cfg = gen_config(gen_models["llama"], gen_data, tmp_path, {"name": "prompt_tuning"})
    prompt_task, prompt_model = built(prompt_cfg)
    assert "virtual tokens" in speed.packing_blocker(prompt_model)
    assert not prompt_model.can_keep_logits()  # PEFT prepends the virtual tokens: positions would shift
    assert not isinstance(speed.train_collator(prompt_cfg.train, prompt_task, prompt_model), DataCollatorWithFlattening)
    with pytest.raises(LmtuneError, match="train.packing=true: packing is not exact here: a prompt-learning"):
        speed.train_collator(prompt_cfg.train.updated({"packing": True}), prompt_task, prompt_model)


def test_classifiers_are_not_packed(tiny_models, toy_data, tmp_path):
    from conftest import tiny_raw_config
    from lmtune.runconfig import resolve_config

    cfg = resolve_config(tiny_raw_config(tiny_models["bert"], toy_data, tmp_path, {"name": "lora"}))
    task, model = built(cfg)
    assert "reads whole rows" in speed.packing_blocker(model)
    with pytest.raises(LmtuneError, match="reads whole rows"):
        speed.train_collator(cfg.train.updated({"packing": True}), task, model)
    llama_cfg = resolve_config(tiny_raw_config(tiny_models["llama"], toy_data, tmp_path, {"name": "lora"}))
    assert "reads whole rows" in speed.packing_blocker(built(llama_cfg)[1])  # a classifier on a decoder body


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(gen_models, gen_data, tmp_path):  # noqa: F811
    cfg = gen_config(gen_models["llama"], gen_data, tmp_path, {"name": "lora", "dropout": 0.0})
    task, model = built(cfg)
    batch = task.collator(model.tokenizer)(rows_of_different_lengths(task, model))
    model.train()
    reference = loss_and_grads(model, batch)
    speed.prepare(cfg.train.updated({"gradient_checkpointing": True}), model)
    lm = speed.language_model(model.body)
    assert lm.is_gradient_checkpointing
    assert_same(reference, loss_and_grads(model, batch))


def test_length_grouped_batches_visit_every_row_once_with_less_padding(tiny_models, toy_data, tmp_path):
    from conftest import tiny_raw_config
    from lmtune.runconfig import resolve_config
    from lmtune.train.runner import _trainer

    cfg = resolve_config(tiny_raw_config(tiny_models["bert"], toy_data, tmp_path, {"name": "lora"}, batch_size=8))
    task, model = built(cfg)
    splits = task.load_data()

    def rows_and_padding(config):
        trainer = _trainer(config, tmp_path / "run", task, model, splits, None)
        grouped = isinstance(trainer._get_train_sampler(), speed.LengthPoolSampler)
        batches = list(trainer.get_train_dataloader())
        rows = sorted(tuple(r[m.bool()].tolist()) for b in batches for r, m in zip(b["input_ids"], b["attention_mask"]))
        return grouped, rows, sum(int((b["attention_mask"] == 0).sum()) for b in batches)

    grouped, rows, padding = rows_and_padding(cfg)
    plain, plain_rows, plain_padding = rows_and_padding(cfg.updated({"train.group_by_length": False}))
    assert grouped and not plain
    assert rows == plain_rows and len(rows) == len(splits.train)  # the same rows once each, in other batches
    assert padding < plain_padding / 2


def test_fast_dropout_replaces_the_adapters_dropout(gen_models, gen_data, tmp_path):  # noqa: F811
    from lmtune.device import cuda_available
    from lmtune.train.dropout import FastDropout

    cfg = gen_config(gen_models["llama"], gen_data, tmp_path, {"name": "lora", "dropout": 0.1})
    task, model = built(cfg)
    speed.prepare(cfg.train.updated({"fast_dropout": False}), model)
    assert not any(isinstance(m, FastDropout) for m in model.modules())
    assert speed.fast_dropout(cfg.train) == (not cuda_available())  # auto: CUDA keeps torch's fused kernel
    speed.prepare(cfg.train.updated({"fast_dropout": True}), model)
    lora = [m for name, m in model.named_modules() if ".lora_dropout." in name]
    assert lora and all(isinstance(m, FastDropout) and m.p == 0.1 for m in lora)
    batch = task.collator(model.tokenizer)(rows_of_different_lengths(task, model))
    model.train()
    model(**batch).loss.backward()  # trains through it
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is not None, reason="Liger-Kernel is installed")
def test_liger_kernel_is_refused_clearly_when_missing(gen_models, gen_data, tmp_path):  # noqa: F811
    cfg = gen_config(gen_models["llama"], gen_data, tmp_path, {"name": "lora"})
    _, model = built(cfg)
    with pytest.raises(LmtuneError, match=r"train.liger_kernel=true: Liger-Kernel is not installed .*pip install"):
        speed.prepare(cfg.train.updated({"liger_kernel": True}), model)
    speed.prepare(cfg.train, model)  # auto: off where it cannot apply, no error


def test_length_sorted_evaluation_equals_one_row_at_a_time(tiny_models, toy_data, tmp_path):
    from conftest import tiny_raw_config
    from lmtune.runconfig import resolve_config

    cfg = resolve_config(tiny_raw_config(tiny_models["bert"], toy_data, tmp_path, {"name": "lora"}))
    task, model = built(cfg)
    table = task.load_data().validation
    metrics = task.evaluate(model, table, batch_size=8)
    collate, encoded = task.collator(model.tokenizer), task.encode(table, model.tokenizer)
    with torch.no_grad():
        outputs = [model(**collate([row])) for row in encoded]
    reference = task.compute_metrics(torch.cat([o.logits for o in outputs]).numpy(), encoded["labels"])
    assert metrics["confusion_matrix"] == reference["confusion_matrix"]
    assert metrics["roc_auc"] == pytest.approx(reference["roc_auc"])
    assert metrics["loss"] == pytest.approx(float(torch.stack([o.loss for o in outputs]).mean()), rel=1e-5)


def test_length_grouped_order_is_a_function_of_seed_and_epoch():
    lengths = [(7 * i) % 23 + 1 for i in range(64)]

    def order(epoch: int, seed: int = 3) -> list[int]:
        sampler = speed.LengthPoolSampler(4, lengths, seed=seed, pool=50)
        torch.manual_seed(epoch * 11 + 5)  # the global RNG (what a resumed run restores differently) plays no part
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0) == order(0) and sorted(order(0)) == list(range(64))
    assert order(1) != order(0) and order(0, seed=4) != order(0)


def batch_lengths(order: list[int], lengths: list[int], batch: int) -> list[list[int]]:
    return [[lengths[i] for i in order[start : start + batch]] for start in range(0, len(order), batch)]


def padded_share(order: list[int], lengths: list[int], batch: int) -> float:
    cut = batch_lengths(order, lengths, batch)
    return 1 - sum(map(sum, cut)) / sum(max(b) * len(b) for b in cut)


def test_length_pools_pad_less_than_transformers_and_keep_the_batches_random():
    generator = torch.Generator().manual_seed(0)
    lengths = (torch.randint(3, 60, (1_000,), generator=generator)).tolist()
    batch = 16
    pooled = speed.LengthPoolSampler(batch, lengths, seed=0, pool=50)
    order = list(pooled)
    assert sorted(order) == list(range(1_000))
    cut = batch_lengths(order, lengths, batch)
    assert max(cut[0]) == max(lengths)  # the longest batch first: out of memory at step 1, not later
    assert len(cut[-1]) == 1_000 % batch and all(len(b) == batch for b in cut[:-1])  # the short batch last
    reference = list(LengthGroupedSampler(batch, lengths=lengths, generator=torch.Generator().manual_seed(0)))
    assert padded_share(order, lengths, batch) < padded_share(reference, lengths, batch) / 2
    # still random: the batches' order is not sorted by length, and another epoch makes other batches
    firsts = [b[0] for b in cut[1:-1]]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)
    pooled.set_epoch(1)
    assert {tuple(sorted(order[i : i + batch])) for i in range(0, 1_000, batch)} != {
        tuple(sorted(list(pooled)[i : i + batch])) for i in range(0, 1_000, batch)}
    # one pool per batch is the unsorted order, cut as it comes
    unsorted = list(speed.LengthPoolSampler(batch, lengths, seed=0, pool=1))
    assert padded_share(unsorted, lengths, batch) > padded_share(reference, lengths, batch)
