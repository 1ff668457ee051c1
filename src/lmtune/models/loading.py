"""Load a backbone (body without any head) and its tokenizer from a bundled name, a folder, a GGUF file or the hub."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import transformers
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

import lmtune.models.lstm  # noqa: F401,E402  registers the LSTM LM (model_type lmtune_lstm) with the Auto classes
from lmtune.config.schema import ModelConfig
from lmtune.device import torch_dtype
from lmtune.errors import LmtuneError
from lmtune.io import sha256_files
from lmtune.models.bundled import BUNDLED, cache_dir, gguf_to_folder
from lmtune.models.quantization import quantized_loading

DECODER_ARCH_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclass
class Backbone:
    body: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_id: str
    """What the user named (`minilm`, a folder, a hub id)."""
    path: Path
    """The local folder it was loaded from (tokenizer and config live there)."""
    weights_hash: str
    kind: Literal["encoder", "decoder"]
    pooling: str
    model_type: str = field(init=False)

    def __post_init__(self) -> None:
        self.model_type = self.body.config.model_type


def resolve_model_path(cfg: ModelConfig) -> Path:
    """The local folder for `cfg.name`, converting GGUF files once; clear errors for anything else."""
    name = cfg.name
    if name in BUNDLED:
        return BUNDLED[name]()
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return gguf_to_folder(path)
    if path.is_dir() and cfg.gguf_file:
        return gguf_to_folder(path / cfg.gguf_file)
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            fix = f"set model.gguf_file to one of {ggufs}" if ggufs else "point model.name at a folder with config.json and weights"
            raise LmtuneError(f"{path} is not a model folder (no config.json); {fix}")
        return path
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise LmtuneError(f"model {name!r} is neither a model folder nor a .gguf file; bundled names: {', '.join(BUNDLED)}")
    return _from_hub(name)


def _from_hub(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as err:  # noqa: BLE001 - offline, unknown id, gated: the fix is the same
        raise LmtuneError(
            f"model {name!r} is not a bundled name ({', '.join(BUNDLED)}), a local folder, or a hub id that could be "
            f"downloaded ({type(err).__name__}). Offline, use a bundled name or a local folder."
        ) from None


def weight_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not files:
        raise LmtuneError(f"{path} holds no weights (*.safetensors); it is not a model folder")
    return files


def weights_hash(path: Path) -> str:
    """sha256 of the weight files, cached by (path, size, mtime) so a 500 MB model is hashed once."""
    files = weight_files(path)
    key = "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    index_file = cache_dir() / "hashes.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    if key not in index:
        index[key] = sha256_files(files)
        index_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = index_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(index))
        os.replace(tmp, index_file)
    return index[key]


def sentence_transformers_pooling(path: Path) -> str | None:
    """sentence-transformers folders say how they were trained to be read (1_Pooling/config.json)."""
    pooling_cfg = path / "1_Pooling" / "config.json"
    if not pooling_cfg.is_file():
        return None
    modes = json.loads(pooling_cfg.read_text())
    if modes.get("pooling_mode_mean_tokens"):
        return "mean"
    if modes.get("pooling_mode_cls_token"):
        return "cls"
    if modes.get("pooling_mode_lasttoken"):
        return "last"
    return None


def backbone_kind(config) -> Literal["encoder", "decoder"]:
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(DECODER_ARCH_SUFFIXES) for a in architectures) or getattr(config, "is_decoder", False):
        return "decoder"
    return "encoder"


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        # Decoder tokenizers often have no pad token; padding positions are masked out anyway.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_backbone(cfg: ModelConfig, auto_class: str = "AutoModel", seed: int = 0) -> Backbone:
    """`auto_class` is the task's: AutoModel (a body for a new head) or AutoModelForCausalLM/Seq2SeqLM (with the
    pretrained LM head, for generation). `seed` initialises the weights when `cfg.init` is random."""
    path = resolve_model_path(cfg)
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as err:  # noqa: BLE001
        raise LmtuneError(f"{path} has a config.json transformers cannot read: {err}") from None
    digest = weights_hash(path)
    tokenizer = load_tokenizer(path)
    # A fresh head is expected to be missing, and tensor-parallel notes do not apply to one process.
    for noisy in ("transformers.modeling_utils", "transformers.distributed.tensor_parallel"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if auto_class == "AutoModelForCausalLM" and getattr(config, "is_encoder_decoder", False):
        auto_class = "AutoModelForSeq2SeqLM"  # generative tasks take either kind of LM
    try:
        auto = getattr(transformers, auto_class)
        if cfg.init == "random":
            transformers.set_seed(seed)  # the same seed rebuilds the same weights when the run is loaded again
        dtype = torch_dtype(cfg.dtype)
        if cfg.init == "random":
            body = auto.from_config(config, dtype=dtype)
        else:
            body = auto.from_pretrained(path, config=config, dtype=dtype, **quantized_loading(cfg.quantization, dtype))
    except ValueError as err:  # e.g. an encoder-only model asked to generate
        raise LmtuneError(f"{cfg.name} ({config.model_type}) cannot load as {auto_class}: {err}") from None
    kind = backbone_kind(config)
    pooling = cfg.pooling
    if pooling == "auto":
        pooling = sentence_transformers_pooling(path) or ("last" if kind == "decoder" else "mean")
    if cfg.init == "random":
        digest = f"random-init:{seed}:{digest}"  # adapters trained on these weights must not load on the pretrained ones
    return Backbone(body, tokenizer, cfg.name, path, digest, kind, pooling)
