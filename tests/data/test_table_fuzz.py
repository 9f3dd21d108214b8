"""Fuzz of the CSV reader: whatever bytes a CSV holds, load_table + check_inputs either succeed or raise a
CrossmodalError with a one-line message; never another exception (which would reach the user as a traceback)."""
from __future__ import annotations

import csv
import io
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from crossmodal_cli.pipeline.labels import read_labelled
from crossmodal_cli.tasks.classification import Classification
from crossmodal_cli.data.validation import check_inputs
from crossmodal_cli.errors import CrossmodalError

COLUMNS = {"image": "image_path", "text": "text", "audio": "audio_path", "label": "label", "split": "split"}
KNOWN = list(COLUMNS.values())
ODD_NAMES = ["", " label ", "Label", "line", "source", "root", "target", "has_image", "x,y", 'q"uote', "new\nline"]

cell_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12) | \
    st.sampled_from(["", " ", ",", '"', '""', "a,b", "line\nbreak", "\r\n", "\ufeff", "é", "日本", "😀", "\x00"])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """data/ (the CSV's folder: real files, a folder, a symlink out) next to outside/ (real files, not under root)."""
    base = tmp_path_factory.mktemp("fuzz")
    data, outside = base / "data", base / "outside"
    for folder in (data, outside):
        (folder / "dir").mkdir(parents=True)
        Image.new("RGB", (8, 8), "red").save(folder / "a.png")
        Image.new("RGB", (8, 8), "blue").save(folder / "b.jpg")
        sf.write(folder / "a.wav", np.zeros(800, dtype="float32"), 8000)
        (folder / "bad.png").write_bytes(b"not an image")
    (data / "link.png").symlink_to(outside / "a.png")
    return base


GOOD_PATHS = ["a.png", "b.jpg", "a.wav", "{data}/a.png", "dir/../a.png", "../data/b.jpg"]
ODD_PATHS = ["bad.png", "missing.png", "dir", "dir/", ".", "..", "link.png", "../outside/a.png",
             "dir/../../outside/a.png", "{outside}/a.png", "{outside}/a.wav", "/etc/passwd", "/", "~/a.png",
             "a.png\x00", "ä.png", " a.png ", "a" * 300 + ".png", "", "a.png\n", "a.png/x"]
LABELS = ["cat", "dog", " dog ", "bird"]
ODD_LABELS = ["1", "2", "10", "", "b\nird", "ünï", "a,b"]
SPLITS = ["train", "val", "test", "TRAIN", "validation", "dev", "Test "]
TEXTS = ["a photo", "two, with comma", 'a "quote"', "ünï", "x\ny", " ", "日本語", "😀"]


def plausible_cell(rng: random.Random, base: Path, column: str, odd: float) -> str:
    """A cell of a plausible CSV: valid values, and odd ones with probability `odd`, drawn uniformly (Hypothesis'
    own choices favour the first options, which would make almost every CSV fail before the file checks)."""
    if column in ("image_path", "audio_path"):
        path = rng.choice(ODD_PATHS if rng.random() < odd else GOOD_PATHS)
        return path.format(data=base / "data", outside=base / "outside")
    if column == "label":
        return rng.choice(LABELS + ODD_LABELS if rng.random() < odd else LABELS[:2])
    if column == "split":
        return rng.choice(SPLITS if rng.random() < odd else ["train", "train", "val", "test"])
    return rng.choice(TEXTS)


def messy_cell(base: Path, column: str):
    if column in ("image_path", "audio_path"):
        paths = st.sampled_from(GOOD_PATHS + ODD_PATHS).map(lambda p: p.format(data=base / "data",
                                                                                  outside=base / "outside"))
        return paths | cell_text
    options = {"label": LABELS + ODD_LABELS, "split": SPLITS}.get(column, TEXTS)
    return st.sampled_from(options) | cell_text


@st.composite
def plausible_csv(draw, base: Path) -> tuple[bytes, random.Random]:
    """A CSV as a user might write it: the usual columns in any order, some extra ones, mostly valid cells; mostly
    comma-separated."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    extra = rng.sample(["audio_path", "split", "Label", "line", "source", "", "root"], rng.randint(0, 4))
    header = rng.sample(["label", "image_path", "text", *extra], 3 + len(extra))
    odd = rng.choice([0.0, 0.0, 0.02, 0.2])
    rows = [[plausible_cell(rng, base, column, odd) for column in header] for _ in range(rng.randint(0, 50))]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=rng.choice(["\n", "\r\n"]),
               delimiter=rng.choice([",", ",", ",", ";", "\t", "|"])).writerows([header, *rows])
    return buffer.getvalue().encode(rng.choice(["utf-8"] * 18 + ["utf-8-sig", "latin-1"]), errors="replace"), rng


@st.composite
def broken_csv(draw, base: Path) -> tuple[bytes, random.Random]:
    """Anything: random header names, cells, row lengths, quoting, line ends, encodings and damaged bytes."""
    rng = random.Random(draw(st.integers(0, 2**32)))  # the coarse choices, uniformly (see plausible_cell)
    header = draw(st.lists(st.one_of(st.sampled_from(KNOWN), st.sampled_from(ODD_NAMES), cell_text), max_size=7))
    ragged = rng.random() < 0.3
    rows = []
    for _ in range(draw(st.integers(0, 30))):
        row = [draw(messy_cell(base, column)) for column in header]
        if ragged and rng.random() < 0.2:
            row = row[:rng.randint(0, len(row))] if rng.random() < 0.5 else row + [draw(cell_text)]
        rows.append(row)
    newline = rng.choice(["\n", "\r\n", "\r"])
    if rng.random() < 0.7:  # a proper CSV writer
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=newline).writerows([header, *rows])
        text = buffer.getvalue()
    else:  # hand-made: no quoting at all
        text = newline.join(",".join(r) for r in [header, *rows]) + rng.choice(["", newline])
    data = text.encode(rng.choice(["utf-8"] * 5 + ["utf-8-sig", "utf-16", "utf-16-be", "latin-1"]), errors="replace")
    if rng.random() < 0.2:  # random damage
        at = rng.randint(0, len(data))
        data = data[:at] + draw(st.binary(max_size=8)) + data[at:]
    return data, rng


def read_and_check(world: Path, content: bytes, rng: random.Random) -> None:
    """Write `content` next to the data files, run load_table and (when it succeeds) check_inputs with random
    options; only a CrossmodalError with a one-line message may come out."""
    on_missing = rng.choice(["error", "drop", "zero"])
    fd, name = tempfile.mkstemp(suffix=".csv", dir=world / "data")  # next to the files: root=None finds them
    csv_path = Path(name)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    try:
        table = read_labelled(
            Classification(), csv=str(csv_path),
            root=rng.choice([None, None, str(world / "data"), str(world), str(world / "data" / "dir")]),
            columns=COLUMNS, modalities=rng.choice([None, None, ["image", "text"], ["text"], ["audio"]]),
            val_fraction=rng.choice([0.0, 0.2, 0.5]), test_fraction=0.2, seed=0, on_missing=on_missing,
            separator=rng.choice(["auto", "auto", "auto", ",", ";", "\t", "|"]),
            explicit=rng.choice([(), (), ("image",), ("label", "split")]))
        check_inputs(table, COLUMNS, on_missing, workers=2, allow_outside_root=rng.random() < 0.3,
                     cache_dir=rng.choice([None, str(world / "cache")]))
        event("checked")
    except CrossmodalError as err:
        message = str(err)
        event(message.split(": ", 1)[-1][:30])
        assert message and len(message.splitlines()) == 1 and "\n" not in message, repr(message)
    finally:
        csv_path.unlink()


FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.function_scoped_fixture])


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_plausible_csvs_give_a_table_or_a_one_line_crossmodal_error(world, data):
    read_and_check(world, *data.draw(plausible_csv(world)))


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_broken_csvs_give_a_one_line_crossmodal_error(world, data):
    read_and_check(world, *data.draw(broken_csv(world)))
