"""The listings demo (data/tabular_demo.py) shows what the tabular modality is for: its label needs the digit in
the image and the price together, so image + tabular learns it while the image alone and the tabular columns
alone stay at chance (1/3)."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from crossmodal_cli.data.tabular_demo import make_tabular_data
from crossmodal_cli.paths import config_dir
from crossmodal_cli.train import train


@pytest.mark.slow
def test_image_and_tabular_together_beat_each_alone(tmp_path):
    csv = make_tabular_data(tmp_path / "data", 900, seed=0)
    accuracy = {}
    for modalities in ("[image]", "[tabular]", "[image,tabular]"):
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=["experiment=tabular", f"data.csv={csv}", f"modalities={modalities}",
                                              "trainer.num_workers=0", "trainer.progress_bar=false"])
        accuracy[modalities] = train(cfg, tmp_path / modalities.strip("[]").replace(",", "-"))["test"]["accuracy"]
    assert accuracy["[image,tabular]"] > 0.85, accuracy
    assert accuracy["[image]"] < 0.5 and accuracy["[tabular]"] < 0.5, accuracy
