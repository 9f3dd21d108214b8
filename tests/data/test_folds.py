"""K-fold cross-validation (data/folds.py): the folds partition the train and val rows, keep each class's share,
leave the test split alone, and cmeval finds the same validation fold; wrong fold settings are one line."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import write_dataset
from crossmodal_cli.data.folds import fold_numbers
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.paths import config_dir
from crossmodal_cli.pipeline.labels import read_labelled
from crossmodal_cli.tasks.classification import Classification

COLUMNS = {"image": "image_path", "text": "text", "audio": "audio_path", "label": "label", "split": "split"}


def load(csv, folds, keep=("train", "val", "test"), seed=0, **kw):
    return read_labelled(Classification(), csv=str(csv), columns=COLUMNS, modalities=None, val_fraction=0.25,
                         test_fraction=0.25, seed=seed, folds=folds, keep=keep, **kw)


def test_fold_numbers_deal_each_stratum_evenly_and_are_seeded():
    strata = pd.Series(["a"] * 7 + ["b"] * 5 + ["c"] * 3)
    numbers = fold_numbers(strata, len(strata), 3, seed=0)
    assert np.bincount(numbers).tolist() == [5, 5, 5]
    for label, count in (("a", 7), ("b", 5), ("c", 3)):
        per_fold = np.bincount(numbers[(strata == label).to_numpy()], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == count
    assert (fold_numbers(strata, 15, 3, seed=0) == numbers).all()
    assert (fold_numbers(strata, 15, 3, seed=1) != numbers).any()


def test_the_folds_partition_the_non_test_rows_are_stratified_and_leave_test_alone(tmp_path):
    csv = write_dataset(tmp_path / "ds", n=40)
    plain = load(csv, None)
    vals, trains = [], []
    for fold in range(4):
        table = load(csv, (4, fold))
        assert table.splits["test"]["line"].tolist() == plain.splits["test"]["line"].tolist()
        val, train = set(table.splits["val"]["line"]), set(table.splits["train"]["line"])
        assert not val & train and len(val) in (7, 8)
        assert table.splits["val"]["label"].value_counts().to_dict() in (
            {"cat": 4, "dog": 4}, {"cat": 4, "dog": 3}, {"cat": 3, "dog": 4}, {"cat": 4}, {"dog": 4})
        assert table.splits["val"]["label"].nunique() == 2
        vals.append(val)
        trains.append(train)
    pooled = set(plain.splits["train"]["line"]) | set(plain.splits["val"]["line"])
    assert set().union(*vals) == pooled and sum(len(v) for v in vals) == len(pooled)
    assert all(trains[i] == pooled - vals[i] for i in range(4))
    evaluated = load(csv, (4, 2), keep=["val"], classes=["cat", "dog"])  # cmeval split=val reads the run's own validation fold
    assert set(evaluated.splits["val"]["line"]) == vals[2]


def test_folds_pool_a_split_column_too(tmp_path):
    csv = write_dataset(tmp_path / "ds", n=24, with_split=True)
    plain = load(csv, None)
    table = load(csv, (3, 0))
    assert table.splits["test"]["line"].tolist() == plain.splits["test"]["line"].tolist()
    assert len(table.splits["train"]) + len(table.splits["val"]) == len(plain.splits["train"]) + len(
        plain.splits["val"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.folds=5", "data.fold=5"], "data.fold=5: the folds of data.folds=5 are numbered 0 to 4"),
    (["data.fold=1"], "data.fold=1 needs data.folds=K"),
    (["data.folds=1"], "data.folds"),
])
def test_wrong_fold_settings_are_one_line(overrides, message):
    from crossmodal_cli.train import check_config

    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides)
    with pytest.raises(CrossmodalError, match=message.replace("(", r"\(")):
        check_config(cfg)


def test_more_folds_than_rows_is_one_line(tmp_path):
    csv = write_dataset(tmp_path / "ds", n=8)
    with pytest.raises(CrossmodalError, match="data.folds=9: only 6 train and val rows"):
        load(csv, (9, 0))
