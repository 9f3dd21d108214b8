"""Every task trains and evaluates end to end (the bodies of cmtrain and cmeval, in process) on the colours data
(crossmodal_cli/data/colours.py), with results well above chance at fixed seeds, and cmeval works from the checkpoint
alone: the task's metrics, its predictions.csv columns, its stored state."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from crossmodal_cli.engine.checkpoint import load_checkpoint
from crossmodal_cli.evaluate import evaluate
from crossmodal_cli.paths import config_dir
from crossmodal_cli.train import train
from crossmodal_cli.data.colours import HUES, write_colours

FAST = ["trainer.num_workers=0", "trainer.progress_bar=false", "trainer.batch_size=16", "data.image_size=32"]


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    return write_colours(tmp_path_factory.mktemp("colours"), n=240)


def run(csv: Path, run_dir: Path, *overrides: str, epochs: int = 8, modalities: str = "image,text") -> dict:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["data=csv", f"data.csv={csv}", *FAST, f"trainer.max_epochs={epochs}",
                                          f"modalities=[{modalities}]", *overrides])
    return train(cfg, run_dir)


def cmeval(run_dir: Path, *overrides: str) -> tuple[dict, pd.DataFrame]:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", "trainer.num_workers=0",
                                         *overrides])
    (run_dir / "eval").mkdir(exist_ok=True)
    metrics = evaluate(cfg, run_dir / "eval")
    return metrics, pd.read_csv(run_dir / "eval" / "predictions.csv", keep_default_na=False)


def test_multilabel(colours, tmp_path):
    results = run(colours, tmp_path, "task=multilabel", "data.columns.label=tags")
    assert results["monitor"] == "val/map"
    val = results["val"]
    assert val["map"] > 0.95 and val["f1_micro"] > 0.9 and val["subset_accuracy"] > 0.8, val  # chance map ~0.35
    assert val["hamming_loss"] < 0.1
    state = load_checkpoint(tmp_path / "checkpoints" / "best.ckpt")["task"]
    assert state["classes"] == ["dark", "red", "warm"] and 0.05 <= state["threshold"] <= 0.95
    metrics, predictions = cmeval(tmp_path)
    assert metrics["map"] == pytest.approx(results["test"]["map"], abs=1e-6)
    assert list(predictions.columns) == ["row", "source", "line", "image", "text", "label", "predicted", "prob_dark",
                                         "prob_red", "prob_warm"]
    exact = (predictions["label"].map(lambda s: set(filter(None, s.split("|")))) ==
             predictions["predicted"].map(lambda s: set(filter(None, s.split("|")))))
    assert exact.mean() > 0.8 and (predictions["label"] == "").any()  # rows without any tag take part


def test_regression(colours, tmp_path):
    results = run(colours, tmp_path, "task=regression", "data.columns.label=value")
    assert results["monitor"] == "val/mae"
    std = pd.read_csv(colours)["value"].std()
    val = results["val"]
    assert val["r2"] > 0.8 and val["mae"] < 0.4 * std, (val, std)
    state = load_checkpoint(tmp_path / "checkpoints" / "best.ckpt")["task"]
    assert set(state) == {"mean", "std"} and 2 < state["mean"] < 6
    metrics, predictions = cmeval(tmp_path)
    assert metrics["r2"] > 0.8
    assert list(predictions.columns) == ["row", "source", "line", "image", "text", "label", "predicted"]
    error = (predictions["predicted"] - predictions["label"].astype(float)).abs().mean()
    assert error == pytest.approx(metrics["mae"], rel=1e-4)


def test_retrieval(colours, tmp_path):
    results = run(colours, tmp_path, "task=retrieval", epochs=10)
    assert results["monitor"] == "val/recall_mean"
    val = results["val"]
    rows = len(pd.read_csv(colours)) * 0.1  # the default validation fraction
    # 24 (hue, level) pairs: the right pair in the top 5 is chance 5 / 24 rows at best; recall@10 needs the pair
    assert val["i2t_r5"] > 0.6 and val["t2i_r5"] > 0.6, val
    assert val["i2t_median_rank"] <= 5 and val["t2i_median_rank"] <= 5, (val, rows)
    metrics, predictions = cmeval(tmp_path)
    assert metrics["recall_mean"] == pytest.approx(results["test"]["recall_mean"], abs=1e-6)
    assert list(predictions.columns) == ["row", "source", "line", "image", "text", "image_to_text_top5_lines",
                                         "image_to_text_rank", "text_to_image_top5_lines", "text_to_image_rank"]
    assert ((predictions["image_to_text_rank"] <= 5).mean() == pytest.approx(metrics["i2t_r5"], abs=1e-6))


def test_multitask(colours, tmp_path):
    results = run(colours, tmp_path, "task=multitask",
                  "task.heads={hue:{type:classification},value:{type:regression,weight:0.5}}")
    assert results["monitor"] == "val/hue/accuracy"
    val = results["val"]
    assert val["hue/accuracy"] > 0.9 and val["value/r2"] > 0.7, val  # chance 1/6 and 0
    state = load_checkpoint(tmp_path / "checkpoints" / "best.ckpt")["task"]
    assert state["hue"]["classes"] == sorted(HUES) and set(state["value"]) == {"mean", "std"}
    metrics, predictions = cmeval(tmp_path)
    assert metrics["hue/accuracy"] > 0.9
    assert {"hue/label", "hue/predicted", "value/label", "value/predicted"} <= set(predictions.columns)
    assert (predictions["hue/label"] == predictions["hue/predicted"]).mean() == pytest.approx(
        metrics["hue/accuracy"], abs=1e-6)


def test_a_distilled_student_agrees_with_its_teacher_more_than_one_trained_without_it(colours, tmp_path):
    """The teacher learns the hue from clean labels; the students see 60 % of the training labels replaced by
    another hue. Without the teacher a student learns much of that noise; with it, it follows the teacher."""
    teacher = tmp_path / "teacher"
    run(colours, teacher, "data.columns.label=hue")
    frame = pd.read_csv(colours)
    rng = np.random.default_rng(0)
    noisy = rng.random(len(frame)) < 0.6
    frame.loc[noisy, "hue"] = [HUES[(HUES.index(h) + rng.integers(1, 6)) % 6] for h in frame.loc[noisy, "hue"]]
    noisy_csv = colours.parent / "noisy.csv"
    frame.to_csv(noisy_csv, index=False)

    ckpt = teacher / "checkpoints" / "best.ckpt"
    run(noisy_csv, tmp_path / "plain", "data.columns.label=hue", modalities="text", epochs=12)
    run(noisy_csv, tmp_path / "distilled", "data.columns.label=hue", f"distill.teacher={ckpt}", "distill.alpha=0.2",
        modalities="text", epochs=12)

    def predictions(run_dir: Path) -> pd.Series:
        return cmeval(run_dir, f"data.test_csv={colours}", "data.columns.label=hue")[1]["predicted"]

    truth = predictions(teacher)
    plain = (predictions(tmp_path / "plain") == truth).mean()
    distilled = (predictions(tmp_path / "distilled") == truth).mean()
    assert distilled > plain + 0.1, (plain, distilled)
    assert distilled > 0.9
