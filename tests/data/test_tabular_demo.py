"""The generated image + text + tabular data set: layout, determinism, balanced splits, the tabular columns' traits,
and a label that needs the image and the price together (each alone at chance, 1/3)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from crossmodal_cli.data.csvfile import read_csv
from crossmodal_cli.data.tabular import TabularOptions, TabularPreprocessor
from crossmodal_cli.data.tabular_demo import COLUMNS, make_tabular_data, price_bucket, tabular_plan

ROWS = 600


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    csv = make_tabular_data(tmp_path_factory.mktemp("tabular"), ROWS, seed=4)
    return csv, read_csv(csv)


def _best_rule_accuracy(keys: pd.Series, labels: pd.Series) -> float:
    """The held-out accuracy of the best rule that sees only `keys`: each key's majority label among the even
    rows, scored on the odd rows (a key never seen among the even rows gets the overall majority)."""
    keys, labels = keys.reset_index(drop=True), labels.reset_index(drop=True)
    fit, held = keys.index % 2 == 0, keys.index % 2 == 1
    rule = labels[fit].groupby(keys[fit]).agg(lambda v: v.value_counts().idxmax())
    guess = keys[held].map(rule).fillna(labels[fit].value_counts().idxmax())
    return float((guess == labels[held]).mean())


def test_writes_the_columns_and_images(data):
    csv, frame = data
    assert list(frame.columns) == COLUMNS and len(frame) == ROWS
    with Image.open(csv.parent / frame["image_path"].iloc[0]) as img:
        assert img.size == (32, 32) and img.mode == "RGB"
    assert all((csv.parent / p).is_file() for p in frame["image_path"])


def test_the_same_seed_gives_the_same_files_and_another_seed_others(tmp_path):
    a = make_tabular_data(tmp_path / "a", 60, seed=7)
    b = make_tabular_data(tmp_path / "b", 60, seed=7)
    c = make_tabular_data(tmp_path / "c", 60, seed=8)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    images = sorted((tmp_path / "a" / "images").iterdir())
    assert all(p.read_bytes() == (tmp_path / "b" / "images" / p.name).read_bytes() for p in images)


def test_labels_are_balanced_in_every_split(data):
    _, frame = data
    counts = pd.crosstab(frame["split"], frame["label"])
    assert counts.loc["val"].tolist() == counts.loc["test"].tolist() == [30, 30, 30]
    assert counts.loc["train"].tolist() == [140, 140, 140]


def test_the_label_needs_the_image_and_the_price_together():
    plan = tabular_plan(6000, seed=5)
    bucket = pd.Series(price_bucket(plan["price"].astype(float).to_numpy()))
    assert (bucket == plan["bucket"]).all()  # the written price falls in the bucket the label used
    chance = 1 / 3
    assert _best_rule_accuracy(plan["digit"], plan["label"]) < chance + 0.04  # the image alone
    assert _best_rule_accuracy(bucket, plan["label"]) < chance + 0.04  # the price alone
    weight = pd.to_numeric(plan["weight"]).round(0).fillna(-1)  # in whole kg, blank apart
    wording = plan["text"].str.replace(r"^listing \d+: ", "", regex=True)  # the number only counts rows
    for keys in (weight, plan["brand"], plan["condition"], wording):  # the others say nothing either
        assert _best_rule_accuracy(keys, plan["label"]) < chance + 0.04
    assert _best_rule_accuracy(plan["digit"].astype(str) + bucket.astype(str), plan["label"]) == 1.0


def test_the_tabular_columns_have_a_heavy_tail_blanks_and_a_rare_value(data):
    _, frame = data
    price = frame["price"].astype(float)
    assert price.max() > 5 * price.median() and (price > 0).all()
    assert 0.08 < (frame["weight"] == "").mean() < 0.22
    counts = frame["brand"].value_counts()
    assert 0 < counts["hooli"] < 0.03 * ROWS
    options = TabularOptions(columns=["price", "weight", "brand", "condition"], categorical=(), numeric=(),
                             transform="log", transforms={}, min_count=10)
    pre = TabularPreprocessor.fit(frame[frame["split"] == "train"], options, "data.csv")
    assert pre.numeric_columns == ["price", "weight"] and pre.categorical_columns == ["brand", "condition"]
    assert "hooli" not in pre.vocabularies["brand"] and pre.report()["brand"]["unknown"] == counts["hooli"] - \
        (frame[frame["split"] != "train"]["brand"] == "hooli").sum()


def test_the_images_show_the_planned_digits(data):
    csv, frame = data
    plan = tabular_plan(ROWS, seed=4)
    pixels = np.stack([np.asarray(Image.open(csv.parent / p).convert("L"), np.float32).ravel() > 120
                       for p in frame["image_path"]])
    means = np.stack([pixels[plan["digit"] == d].mean(0) for d in range(3)])  # each digit's average glyph
    nearest = np.argmax(pixels @ means.T / means.sum(1), axis=1)
    assert (nearest == plan["digit"].to_numpy()).mean() > 0.6  # far above the 1/3 of unrelated images


def test_the_command_line_writes_the_data_set(tmp_path):
    out = subprocess.run([sys.executable, "-m", "crossmodal_cli.data.tabular_demo", str(tmp_path / "d"), "--rows",
                          "40", "--seed", "1"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path / "d" / "data.csv") and len(read_csv(tmp_path / "d" / "data.csv")) == 40
    bad = subprocess.run([sys.executable, "-m", "crossmodal_cli.data.tabular_demo", str(tmp_path / "e"), "--rows",
                          "10"], capture_output=True, text=True)
    assert bad.returncode == 2 and "rows=10: at least 30" in bad.stderr
