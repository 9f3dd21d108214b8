"""The tasks on their own: labels -> targets (and the one-line errors), state, losses, metrics, decoding."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from crossmodal_cli.pipeline.labels import read_labelled
from crossmodal_cli.engine.checkpoint import task_state
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.model import ModelOutput
from crossmodal_cli.data.collate import collate_targets
from crossmodal_cli.tasks.classification import Classification
from crossmodal_cli.tasks.multilabel import MultiLabel
from crossmodal_cli.tasks.multitask import MultiTask
from crossmodal_cli.tasks.regression import Regression
from crossmodal_cli.tasks.retrieval import RetrievalRanks

HEADERS = {"label": "label"}
COLUMNS = {"image": "image_path", "text": "text", "audio": "audio_path", "label": "label", "split": "split"}


def frame(labels, **extra) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame({"label": labels, "source": "/d/data.csv", "line": range(2, n + 2), **extra})


def test_collate_targets_stacks_every_kind():
    assert collate_targets([1, 0, 2]).dtype == torch.int64
    assert collate_targets([np.float32(1.5), np.float32(2)]).dtype == torch.float32
    assert collate_targets([np.ones(3, np.float32), np.zeros(3, np.float32)]).shape == (2, 3)
    both = collate_targets([{"a": 1, "b": np.float32(0.5)}, {"a": 0, "b": np.float32(1)}])
    assert both["a"].tolist() == [1, 0] and both["b"].tolist() == [0.5, 1.0]


# ---- multi-label -------------------------------------------------------------------------------------------------

def test_multilabel_targets_are_multi_hot_and_blank_or_nan_is_the_empty_set():
    task = MultiLabel()
    train = frame(["cat|dog", "dog", "", "NaN", "bird | cat|cat"])
    task.fit(train, HEADERS)
    assert task.classes == ["bird", "cat", "dog"]
    out, dropped = task.targets(train, "train", "error", HEADERS)
    assert dropped == 0 and np.stack(out["target"]).tolist() == [[0, 1, 1], [0, 0, 1], [0, 0, 0], [0, 0, 0],
                                                                  [1, 1, 0]]
    assert task.strata(train).tolist() == ["cat", "dog", "", "", "bird"]


def test_multilabel_unknown_label_is_one_line_or_dropped():
    task = MultiLabel(separator=";")
    task.fit(frame(["a;b", "b"]), HEADERS)
    val = frame(["a", "a;zebra", "b"])
    with pytest.raises(CrossmodalError, match=r"^/d/data.csv: label 'zebra' in the val split is not in the training "
                                              r"split \(1 row \(line 3\)\); known labels: a, b"):
        task.targets(val, "val", "error", HEADERS)
    kept, dropped = task.targets(val, "val", "drop", HEADERS)
    assert dropped == 1 and kept["label"].tolist() == ["a", "b"]


def test_multilabel_needs_two_labels():
    with pytest.raises(CrossmodalError, match=r"column 'tags' has only 'a' in the training rows; multi-label needs "
                                              r"two or more labels"):
        MultiLabel().fit(frame(["a", "", "a"]), {"label": "tags"})


def test_the_threshold_is_tuned_for_micro_f1_and_stored():
    task = MultiLabel()
    task.fit(frame(["a|b", "b"]), HEADERS)
    probabilities = torch.tensor([[0.3, 0.25], [0.1, 0.35], [0.28, 0.05]])
    targets = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    # every threshold in (0.1, 0.25] decides all six right: the middle of that range is kept
    assert task.tune(probabilities, targets) and task.threshold == 0.2
    assert task.state()["threshold"] == 0.2
    again = MultiLabel()
    again.load_state(task.state())
    assert again.predictions(probabilities, frame(["a|b", "b", "a"]))["predicted"].tolist() == ["a|b", "b", "a"]


# ---- regression --------------------------------------------------------------------------------------------------

def test_regression_refuses_a_non_number_naming_file_column_and_row():
    with pytest.raises(CrossmodalError, match=r"^/d/data.csv: column 'price' is not a number \(e.g. 'cheap'\) in "
                                              r"1 row \(line 3\); task=regression needs a number in every row"):
        Regression().check_labels(frame(["1.5", "cheap", "2"]), "/d/data.csv", {"label": "price"})


def test_regression_standardises_with_the_training_split_and_reports_in_label_units():
    task = Regression()
    train = frame(["1", "3", "5", "7"])
    task.fit(train, HEADERS)
    assert task.mean == 4 and task.std == pytest.approx(math.sqrt(5))
    targets = collate_targets(task.targets(train, "train", "error", HEADERS)[0]["target"].tolist())
    exact = ModelOutput((targets - task.mean) / task.std)  # a head that predicts the standardised target
    assert task.losses(exact, targets)["loss"].item() == pytest.approx(0, abs=1e-10)
    torch.testing.assert_close(task.outputs(exact), targets)
    metrics = task.metrics()
    task.update(metrics, exact, targets)
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["mae"] == pytest.approx(0, abs=1e-5) and values["r2"] == pytest.approx(1)


def test_regression_with_one_value_is_refused():
    with pytest.raises(CrossmodalError, match=r"every training row has the same value \(2\)"):
        Regression().fit(frame(["2", "2.0"]), HEADERS)


def test_regression_splits_at_random_and_classification_by_label(dataset_csv):
    frame_ = pd.read_csv(dataset_csv)
    frame_["label"] = np.arange(len(frame_)) * 1.5
    frame_.to_csv(dataset_csv, index=False)
    task = Regression()
    table = read_labelled(task, csv=str(dataset_csv), columns=COLUMNS, modalities=["text"], val_fraction=0.25,
                          test_fraction=0.25, seed=0)
    assert [len(table.splits[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    assert table.splits["train"]["target"].dtype == np.float32 and list(getattr(task, "classes", [])) == []


# ---- retrieval ---------------------------------------------------------------------------------------------------

def test_retrieval_ranks_over_the_whole_split():
    """Four pairs: images 0-2 find their own text first; image 3's text comes third. Texts: the same matrix read
    the other way."""
    images = torch.eye(4)
    texts = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0.6, 0.5, 0, 0.4]])
    metric = RetrievalRanks()
    metric.update(torch.stack([images[:2], texts[:2]], 1))  # two batches: ranks are over all four rows
    metric.update(torch.stack([images[2:], texts[2:]], 1))
    result = {k: float(v) for k, v in metric.compute().items()}
    # image 3 vs texts: similarities 0, 0, 0, 0.4 -> rank 1; text 3 vs images: 0.6, 0.5, 0, 0.4 -> rank 3
    assert result["i2t_r1"] == 1.0 and result["t2i_r1"] == 0.75 and result["t2i_r5"] == 1.0
    assert result["t2i_median_rank"] == 1.0


# ---- several columns -------------------------------------------------------------------------------------------

def test_multitask_targets_per_head_and_a_row_one_head_drops_is_dropped():
    task = MultiTask({"kind": {"type": "classification"}, "price": {"type": "regression", "weight": 0.5}})
    assert task.label_columns({"label": "label"}) == {"label/kind": "kind", "label/price": "price"}
    train = pd.DataFrame({"label/kind": ["a", "b", "a"], "label/price": ["1", "2", "4"], "source": "/d.csv",
                          "line": [2, 3, 4]})
    headers = {"label/kind": "kind", "label/price": "price"}
    task.fit(train, headers)
    out, _ = task.targets(train, "train", "error", headers)
    assert out["target"].tolist()[1] == {"kind": 1, "price": np.float32(2)}
    val = pd.DataFrame({"label/kind": ["a", "zebra"], "label/price": ["3", "5"], "source": "/d.csv", "line": [5, 6]})
    kept, dropped = task.targets(val, "val", "drop", headers)
    assert dropped == 1 and kept["line"].tolist() == [5]
    assert task.metric_names() == ["kind/accuracy", "kind/f1_macro", "price/mae", "price/r2", "price/rmse"]
    assert task.monitor == "kind/accuracy" and not task.higher_is_better("price/mae")
    losses = task.losses(ModelOutput({"kind": torch.zeros(2, 2), "price": torch.zeros(2)}),
                         {"kind": torch.tensor([0, 1]), "price": torch.tensor([3.0, 3.0])})
    assert set(losses) == {"kind/loss", "price/loss"}
    assert losses["kind/loss"].item() == pytest.approx(math.log(2))


def test_version_1_checkpoints_give_a_classification_state():
    assert task_state({"classes": ["a", "b"]}) == {"classes": ["a", "b"]}
    assert task_state({"task": {"mean": 1.0, "std": 2.0}, "classes": []}) == {"mean": 1.0, "std": 2.0}


def test_balanced_class_weights():
    task = Classification(class_weights="balanced")
    task.fit(frame(["a", "a", "a", "b"]), HEADERS)
    assert task.weights == pytest.approx([4 / 6, 2.0])
