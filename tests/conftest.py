"""Shared fixtures: learnable toy data, tiny random models of three architectures, quick configs."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

# Tests never touch the network: set before transformers/datasets/huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Every Ray a test starts stays on loopback (Ray otherwise binds the machine's network address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# LMTUNE_TEST_DEVICE=cuda (or cuda:N) runs the suite on that GPU: lmtune places models with
# lmtune.device.default_device() and Trainer takes the visible GPU, so a test and its reference share the device.
# Unset or `cpu`, no GPU is visible: on a GPU machine the suite runs as on a CPU-only one (set before torch loads).
TEST_DEVICE = os.environ.get("LMTUNE_TEST_DEVICE", "cpu")
if TEST_DEVICE == "cpu":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
elif TEST_DEVICE.startswith("cuda:"):
    os.environ["CUDA_VISIBLE_DEVICES"] = TEST_DEVICE.split(":", 1)[1]

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

POSITIVE = "great excellent lovely superb wonderful happy".split()
NEGATIVE = "awful bad terrible poor broken sad".split()
FILLER = "the a this product item it was is very really quite and so".split()


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    os.environ["LMTUNE_CACHE"] = str(tmp_path_factory.mktemp("lmtune-cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _test_device_present():
    """LMTUNE_TEST_DEVICE=cuda on a machine without a usable GPU would quietly test the CPU: stop instead."""
    from lmtune.device import default_device

    if TEST_DEVICE != "cpu" and default_device().type != "cuda":
        pytest.exit(f"LMTUNE_TEST_DEVICE={TEST_DEVICE}, but torch sees no CUDA GPU", returncode=2)


def toy_rows(count: int, seed: int = 0) -> list[dict]:
    """Two classes told apart by one sentiment word among filler words: learnable in a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.choices(FILLER, k=rng.randint(3, 8)) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("toy-data")
    return {
        "train": write_jsonl(folder / "train.jsonl", toy_rows(96, seed=1)),
        "validation": write_jsonl(folder / "validation.jsonl", toy_rows(32, seed=2)),
    }


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, toy_data) -> dict[str, Path]:
    from lmtune.models.tiny import ARCHES, build_tiny_model

    texts = [json.loads(line)["text"] for line in toy_data["train"].read_text().splitlines()]
    folder = tmp_path_factory.mktemp("tiny-models")
    return {arch: build_tiny_model(arch, folder / arch, texts) for arch in ARCHES}


def tiny_raw_config(model_dir: Path, data: dict[str, Path], out: Path, method: dict, **train) -> dict:
    # fp32 on every device (auto would pick bf16 on a GPU): the tests' tolerances are fp32 ones.
    return {
        "model": {"name": str(model_dir), "max_length": 32, "dtype": "float32"},
        "data": {"train": str(data["train"]), "validation": str(data["validation"])},
        "method": method,
        "train": {"batch_size": 16, "progress": False, "num_threads": 1, "logging_steps": 5, "precision": "fp32", **train},
        "output": {"dir": str(out)},
    }


def build_bpe_llama(folder: Path, texts: list[str], chat_template: str | None = None) -> Path:
    """A tiny random Llama with a byte-level BPE tokenizer trained on `texts` (JSON needs braces and quotes, which
    the word-level tokenizer of lmtune.models.tiny lacks); `chat_template` makes it a chat model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from lmtune.models.tiny import tiny_config

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "</s>", "<s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="</s>", bos_token="<s>")
    tokenizer.chat_template = chat_template
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config("llama", len(tokenizer), tokenizer.pad_token_id,
                                 eos_id=tokenizer.eos_token_id)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
