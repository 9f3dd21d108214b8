"""The generated matching data set: layout, balanced labels and splits, the label rule, chance 0.5 for each
modality alone, determinism with the seed, and the command line."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from crossmodal_cli.data.matching import GLYPHS, WORDS, draw_digit, make_matching_data


def _named(text: str) -> int:
    """The one digit word in a caption, as a number."""
    found = [d for d, word in enumerate(WORDS) if re.search(rf"\b{word}\b", text)]
    assert len(found) == 1, text
    return found[0]


def _shown(path: Path) -> int:
    """The digit drawn in an image, read back by matching its bright pixels against each glyph's cell grid."""
    bright = np.asarray(Image.open(path)).mean(axis=2) > 120
    ys, xs = np.nonzero(bright)
    box = bright[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    scores = []
    for glyph in GLYPHS:
        grid = np.array([[mark == "#" for mark in line] for line in glyph])
        rows, cols = np.nonzero(grid.any(1))[0], np.nonzero(grid.any(0))[0]
        grid = grid[rows.min():rows.max() + 1, cols.min():cols.max() + 1]  # the glyph's own ink box
        h, w = box.shape
        cells = grid[np.minimum(np.arange(h) * grid.shape[0] // h, grid.shape[0] - 1)][
            :, np.minimum(np.arange(w) * grid.shape[1] // w, grid.shape[1] - 1)]
        scores.append((cells == box).mean())
    return int(np.argmax(scores))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    csv = make_matching_data(tmp_path_factory.mktemp("matching"), 400, seed=3)
    return csv, pd.read_csv(csv)


def test_writes_a_csv_with_image_files_and_the_csv_contract_columns(data):
    csv, frame = data
    assert list(frame.columns) == ["image_path", "text", "label", "split"]
    assert len(frame) == 400
    for path in frame["image_path"].head(5):
        with Image.open(csv.parent / path) as img:
            assert img.size == (32, 32) and img.mode == "RGB"


def test_labels_are_balanced_overall_and_in_every_split(data):
    _, frame = data
    assert frame["label"].value_counts().to_dict() == {"match": 200, "mismatch": 200}
    counts = pd.crosstab(frame["split"], frame["label"])
    assert counts.loc["val"].tolist() == [30, 30] and counts.loc["test"].tolist() == [30, 30]
    assert counts.loc["train"].tolist() == [140, 140]


def test_label_is_whether_the_drawn_digit_is_the_named_one(data):
    csv, frame = data
    for _, row in frame.head(60).iterrows():
        same = _shown(csv.parent / row["image_path"]) == _named(row["text"])
        assert same == (row["label"] == "match"), (row["image_path"], row["text"], row["label"])


def test_neither_modality_alone_says_anything_about_the_label(tmp_path):
    """P(match | shown digit) and P(match | named digit) are 1/2 up to sampling noise: chance is 0.5 for each."""
    frame = pd.read_csv(make_matching_data(tmp_path, 4000, seed=0, image_size=16))
    named = frame["text"].map(_named)
    match = frame["label"] == "match"
    rates = match.groupby(named).mean()
    assert len(rates) == 10 and rates.between(0.4, 0.6).all(), rates.to_dict()
    # the shown digit is the named one on matches and uniformly another on mismatches: equally often each way
    assert named[match].value_counts().min() > 120 and named[~match].value_counts().min() > 120


def test_the_same_seed_gives_the_same_files_and_another_seed_others(tmp_path):
    a = make_matching_data(tmp_path / "a", 40, seed=1)
    b = make_matching_data(tmp_path / "b", 40, seed=1)
    c = make_matching_data(tmp_path / "c", 40, seed=2)
    assert a.read_bytes() == b.read_bytes()
    assert (a.parent / "images/00007.png").read_bytes() == (b.parent / "images/00007.png").read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_fewer_digits_use_only_those(tmp_path):
    frame = pd.read_csv(make_matching_data(tmp_path, 200, seed=0, digits=3))
    assert set(frame["text"].map(_named)) == {0, 1, 2}
    assert frame["label"].value_counts().to_dict() == {"match": 100, "mismatch": 100}


def test_every_digit_is_drawn_inside_the_image():
    rng = np.random.default_rng(0)
    for digit in range(10):
        pixels = np.asarray(draw_digit(rng, digit, 32)).mean(axis=2)
        assert (pixels > 120).sum() > 20  # enough ink to read
        assert (pixels[[0, -1]] > 120).sum() == 0 and (pixels[:, [0, -1]] > 120).sum() == 0  # not cut at the edge


@pytest.mark.parametrize("bad", [["--rows", "5"], ["--digits", "11"], ["--image-size", "8"]])
def test_command_line_refuses_impossible_sizes_in_one_line(tmp_path, bad):
    result = subprocess.run([sys.executable, "-m", "crossmodal_cli.data.matching", str(tmp_path / "d"), *bad],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_command_line_writes_the_data_set(tmp_path):
    result = subprocess.run([sys.executable, "-m", "crossmodal_cli.data.matching", str(tmp_path / "d"),
                             "--rows", "30", "--seed", "5"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(tmp_path / "d" / "data.csv")
    assert len(pd.read_csv(tmp_path / "d" / "data.csv")) == 30
