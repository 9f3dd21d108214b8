"""cmpredict, run as a user would: a checkpoint's predictions for a CSV without labels."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from crossmodal_cli.data.colours import HUES, write_colours
from crossmodal_cli.paths import config_dir
from crossmodal_cli.train import train

from console import console


def cmpredict(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*console("cmpredict"), *args, "trainer.num_workers=0"], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A hue classifier on image + text (6 epochs), and a fresh unlabelled CSV of 60 other rows."""
    folder = tmp_path_factory.mktemp("predict")
    csv = write_colours(folder / "train", n=240)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["data=csv", f"data.csv={csv}", "data.columns.label=hue", "data.image_size=32",
                                          "trainer.max_epochs=6", "trainer.batch_size=16", "trainer.num_workers=0",
                                          "trainer.progress_bar=false"])
    train(cfg, folder / "run")
    new = write_colours(folder / "new", n=60, seed=1)
    return folder / "run" / "checkpoints" / "best.ckpt", new


def test_predictions_for_an_unlabelled_csv_with_top_k_and_embeddings(trained, tmp_path):
    ckpt, new = trained
    truth = pd.read_csv(new)["hue"]
    unlabelled = tmp_path / "unlabelled.csv"
    pd.read_csv(new).drop(columns=["hue", "label", "value", "tags"]).rename(
        columns={"image_path": "picture"}).to_csv(unlabelled, index=False)
    proc = cmpredict(f"ckpt={ckpt}", f"data.csv={unlabelled}", f"data.root={new.parent}",
                     "data.columns.image=picture", "predict.top_k=3", "predict.embeddings=true", "hydra.run.dir=out",
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    predictions = pd.read_csv(tmp_path / "out/predictions.csv")
    assert list(predictions.columns) == ["row", "source", "line", "image", "text", "predicted",
                                         *[f"prob_{h}" for h in sorted(HUES)], "top1", "top2", "top3"]
    assert len(predictions) == 60 and predictions["line"].tolist() == list(range(2, 62))
    assert (predictions["predicted"] == truth).mean() > 0.9  # chance 1/6
    assert (predictions["top1"] == predictions["predicted"]).all()
    probabilities = predictions[[f"prob_{h}" for h in sorted(HUES)]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-4)
    embeddings = np.load(tmp_path / "out/embeddings.npz")
    assert embeddings["row"].tolist() == list(range(60))
    assert embeddings["fused"].shape[0] == 60 and embeddings["fused"].ndim == 2
    assert embeddings["pooled/image"].shape[0] == embeddings["pooled/text"].shape[0] == 60


@pytest.mark.parametrize("args,message", [
    (["data.csv=missing.csv"], "error: data.csv=missing.csv: file not found"),
    (["data.csv=new.csv", "predict.top_k=9"], "error: predict.top_k=9: the checkpoint has 6 classes"),
    (["data.csv=new.csv", "predict.top_k=-1"], "error: predict.top_k=-1: must be a whole number >= 0"),
])
def test_mistakes_are_one_line(trained, tmp_path, args, message):
    ckpt, new = trained
    shutil.copy(new, tmp_path / "new.csv")
    shutil.copytree(new.parent / "img", tmp_path / "img")
    proc = cmpredict(f"ckpt={ckpt}", *args, "hydra.run.dir=out", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [message], proc.stderr[-2000:]
