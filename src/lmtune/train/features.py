"""A frozen body's pooled features, computed once per split and cached in the run directory.

The cache key is everything the features depend on: the base model's weights hash, the pooling, the layers read
and the dtype, and the encoded inputs themselves (token ids, attention mask, segment ids). Hashing the encoded
inputs rather than the files covers the data, the columns, the text template, `model.max_length` and the tokenizer at once, so a changed
base or changed data can never be served a stale file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lmtune.device import to_model_device
from lmtune.evaluate.generation import length_batches
from lmtune.io import atomic_write

FEATURES_DIR = "features"
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def features_key(model, encoded) -> str:
    """sha256 over the base weights hash, pooling, layers read, dtype and the encoded rows."""
    digest = hashlib.sha256()
    body_dtype = str(next(model.body.parameters()).dtype)
    identity = {"base": model.backbone.weights_hash, "pooling": model.head.pooling, "dtype": body_dtype,
                "head": type(model.head).__name__, "layers": getattr(model.head, "layers", 1)}
    digest.update(json.dumps(identity, sort_keys=True).encode())
    for key in INPUT_KEYS:
        if key in encoded.column_names:
            digest.update(key.encode())
            for row in encoded[key]:
                digest.update(len(row).to_bytes(4, "little"))
                digest.update(torch.tensor(row, dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def compute_features(model, encoded, collator, batch_size: int) -> torch.Tensor:
    """The pooled body output of every row, in row order (float32, on the CPU). Rows run in batches of similar
    length (less padding; pooling reads only the real tokens, so the batching does not change a row's vector)."""
    was_training = model.training
    model.eval()
    inputs = encoded.remove_columns([c for c in encoded.column_names if c == "labels"]).to_list()
    batches = length_batches([len(row["input_ids"]) for row in inputs], batch_size, equal_lengths=False)
    chunks = []
    for rows in batches:
        batch = to_model_device(collator([inputs[i] for i in rows]), model)
        chunks.append(model.features(**batch).float().cpu())
    model.train(was_training)
    if not chunks:
        return torch.zeros(0, model.head.classifier.in_features)
    features = torch.empty(len(inputs), chunks[0].size(-1))
    features[torch.tensor([i for rows in batches for i in rows])] = torch.cat(chunks)
    return features


def cached_features(model, encoded, collator, batch_size: int, cache_dir: Path, split: str) -> tuple[torch.Tensor, bool]:
    """The split's features from `cache_dir` when its key matches, else computed and written there.
    Returns (features, reused)."""
    key = features_key(model, encoded)
    path = cache_dir / f"{split}.safetensors"
    if path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("key") == key:
                return handle.get_tensor("features"), True
    features = compute_features(model, encoded, collator, batch_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file({"features": features.contiguous()}, str(tmp), metadata={"key": key}))
    return features, False
