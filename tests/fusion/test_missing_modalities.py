"""Rows with a missing image, audio file or text train and validate with every fusion (data.on_missing=zero)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from crossmodal_cli.paths import config_dir
from crossmodal_cli.train import train
from tests.conftest import write_dataset

STRATEGIES = sorted(p.stem for p in Path(config_dir(), "fusion").glob("*.yaml"))


@pytest.fixture(scope="module")
def gappy_csv(tmp_path_factory) -> Path:
    """40 rows; in train and val alike, some rows lack their image file, some their audio file, some their text."""
    folder = tmp_path_factory.mktemp("gappy")
    csv = write_dataset(folder, n=40, with_split=True)
    frame = pd.read_csv(csv)
    for i in (4, 5, 9):
        (folder / frame.loc[i, "image_path"]).unlink()
    for i in (6, 13):
        (folder / frame.loc[i, "audio_path"]).unlink()
    frame.loc[[7, 9, 14], "text"] = ""
    frame.to_csv(csv, index=False)
    return csv


@pytest.mark.parametrize("fusion", STRATEGIES)
def test_every_fusion_trains_on_rows_with_missing_modalities(fusion, gappy_csv, tmp_path):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["data=csv", f"data.csv={gappy_csv}", "data.on_missing=zero",
                                          f"fusion={fusion}", "trainer.modality_dropout=0.3",
                                          "trainer.max_epochs=2", "trainer.batch_size=8", "trainer.num_workers=0",
                                          "trainer.progress_bar=false", "data.image_size=32"])
    results = train(cfg, tmp_path)
    assert math.isfinite(results["val"]["loss"]) and math.isfinite(results["test"]["loss"])
    assert results["skipped_steps"] == 0
    report = json.loads((tmp_path / "data_report.json").read_text())
    frame = pd.read_csv(gappy_csv)
    assert report["rows"] == frame["split"].value_counts().to_dict()  # every row kept
    masked = {split: counts for split, counts in report["unusable_inputs"].items() if counts}
    expected: dict = {}
    for modality, rows in (("image", (4, 5, 9)), ("audio", (6, 13)), ("text", (7, 9, 14))):
        for row in rows:
            split = expected.setdefault(frame.loc[row, "split"], {})
            split[modality] = split.get(modality, 0) + 1
    assert masked == expected
