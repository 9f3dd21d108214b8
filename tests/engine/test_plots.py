"""The evaluation reports: per-class numbers (torchmetrics), report.txt, the pictures, modality importance."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from crossmodal_cli.engine.plots import importance_png, write_report
from crossmodal_cli.engine.reporting import RunReporter
from crossmodal_cli.importance import WithoutModalities, removals
from crossmodal_cli.tasks.base import probability_columns
from crossmodal_cli.tasks.classification import Classification
from pictures import assert_picture


def predictions(n_classes: int, rows: int, accuracy: float, seed: int = 0):
    """Probabilities [rows, C] whose argmax is the target for about `accuracy` of the rows."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(n_classes, (rows,), generator=g)
    logits = torch.randn(rows, n_classes, generator=g)
    right = torch.rand(rows, generator=g) < accuracy
    logits[right, targets[right]] += 6
    return logits.softmax(1), targets


def test_the_report_matches_counted_values():
    task = Classification.with_classes(["cat", "dog", "bird"])
    probs = torch.tensor([[.9, .05, .05], [.2, .7, .1], [.6, .3, .1], [.1, .1, .8], [.3, .4, .3]])
    targets = torch.tensor([0, 1, 1, 2, 2])
    report = task.report(probs, targets)
    assert report["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert report["per_class"]["support"] == [1, 2, 2]
    assert report["per_class"]["precision"] == pytest.approx([0.5, 0.5, 1.0])
    assert report["per_class"]["recall"] == pytest.approx([1.0, 0.5, 0.5])
    reliability = report["reliability"]
    assert sum(reliability["count"]) == 5 and reliability["bins"] == 15
    # ECE by hand: |accuracy - confidence| per bin, weighted by the bin's share of rows
    manual = sum(c / 5 * abs(a - m) for c, a, m in zip(reliability["count"], reliability["accuracy"],
                                                       reliability["confidence"]) if c)
    assert report["ece"] == pytest.approx(manual, abs=1e-6)


def test_full_metrics_add_calibration_and_top5_only_beyond_five_classes():
    assert "top5_accuracy" not in Classification.with_classes(5).metrics(full=True)
    metrics = Classification.with_classes(8).metrics(full=True)
    assert {"ece", "top5_accuracy", "balanced_accuracy", "auroc_macro", "f1_weighted"} <= set(metrics)
    probs, targets = predictions(8, 400, 0.5)
    values = {k: float(v) for k, v in metrics(probs, targets).items()}
    assert values["top5_accuracy"] > values["accuracy"] + 0.2
    assert not Classification.with_classes(8).higher_is_better("ece")


def test_report_files_for_fifty_classes(tmp_path):
    task = Classification.with_classes([f"class number {i} with a long name" for i in range(50)])
    probs, targets = predictions(50, 1000, 0.7)
    written = write_report(task.report(probs, targets), tmp_path, "test")
    assert {p.name for p in written} == {"report.txt", "confusion_matrix.csv", "confusion_matrix.png",
                                         "calibration.png"}
    matrix = pd.read_csv(tmp_path / "confusion_matrix.csv", index_col=0)
    assert matrix.shape == (50, 50) and int(matrix.to_numpy().sum()) == 1000  # every row counted once
    assert np.trace(matrix.to_numpy()) == int((probs.argmax(1) == targets).sum())
    confusion = assert_picture(tmp_path / "confusion_matrix.png", (1500, 1400))  # grows with the classes
    calibration = assert_picture(tmp_path / "calibration.png")
    assert confusion.shape[0] > calibration.shape[0]
    lines = (tmp_path / "report.txt").read_text().splitlines()
    assert lines[0].split() == ["precision", "recall", "f1", "support"]
    assert len(lines) == 2 + 50 + 1 + 2 and lines[-1].split()[-1] == "1000"


def test_probability_columns_are_safe_for_any_label_text():
    columns = probability_columns(["a", "line\nbreak", "line break", "tab\there", "x,y", "prob_a"])
    assert len(set(columns)) == 6 and all(c.isprintable() for c in columns)
    assert columns[0] == "prob_a" and columns[4] == "prob_x,y"
    frame = pd.DataFrame({c: [0.5] for c in columns})
    assert list(pd.read_csv(pd.io.common.StringIO(frame.to_csv(index=False))).columns) == columns


def test_removals_and_masked_batches():
    assert removals(["image", "text"]) == [("image",), ("text",)]
    assert removals(["image", "text", "audio"])[3:] == [("image", "text"), ("image", "audio"), ("text", "audio")]
    batch = {"inputs": {}, "present": {"image": torch.tensor([True, False]), "text": torch.tensor([True, True])}}
    masked = list(WithoutModalities([batch], ["text"]))[0]
    assert masked["present"]["text"].tolist() == [False, False]
    assert masked["present"]["image"].tolist() == [True, False] and batch["present"]["text"].all()


def test_importance_picture(tmp_path):
    importance = {"split": "test", "rows": 180, "metrics": ["accuracy", "f1_macro"], "modality_dropout": 0.0,
                  "trained_with_missing": False, "all_present": {"accuracy": 0.95, "f1_macro": 0.94},
                  "removed": {name: {"drop": {"accuracy": d, "f1_macro": d - 0.05}} for name, d in
                              (("image", 0.6), ("text", 0.1), ("audio", 0.02), ("text+audio", 0.6))}}
    assert_picture(importance_png(importance, tmp_path / "modality_importance.png"))


def test_curves_mark_the_best_epoch_and_chance(tmp_path):
    reporter = RunReporter(tmp_path, tensorboard=False, monitor="val/loss", monitor_mode="min",
                           chance={"accuracy": 1 / 3, "f1_macro": 1 / 3})
    for epoch, (loss, acc) in enumerate([(1.0, 0.4), (0.5, 0.8), (0.7, 0.9)], start=1):
        reporter.epoch({"epoch": epoch, "step": epoch * 10, "train/loss": loss, "val/loss": loss,
                        "val/accuracy": acc, "val/f1_macro": acc})
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert reporter._best_epoch(records) == 2  # the lowest val/loss, not the highest accuracy
    reporter.close()
    assert_picture(tmp_path / "curves.png", (900, 350))
