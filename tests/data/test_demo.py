"""The generated demo data set: layout, files, the label rule, determinism and regeneration only when needed."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from crossmodal_cli.data.demo import ensure_demo

SMALL = dict(image_size=32, sample_rate=8000, seconds=0.25)
COLOURS = ("red", "green", "blue")
LABELS = ("alpha", "beta", "gamma")


def _make(folder: Path, num_samples: int = 60, seed: int = 0) -> Path:
    return ensure_demo(folder, num_samples=num_samples, seed=seed, **SMALL)


def _colour(text: str) -> int:
    """The one colour word in a caption, as an index."""
    found = [i for i, c in enumerate(COLOURS) if re.search(rf"\b{c}\b", text)]
    assert len(found) == 1, text
    return found[0]


def _shape(path: Path) -> int:
    """circle 0, square 1, triangle 2, from how much of its bounding box the bright shape fills."""
    bright = np.asarray(Image.open(path)).mean(axis=2) > 115
    ys, xs = np.nonzero(bright)
    fill = bright.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
    return 1 if fill > 0.9 else 0 if fill > 0.65 else 2


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    return _make(tmp_path_factory.mktemp("demo") / "demo", num_samples=300)


def test_layout_and_files(tmp_path):
    csv = _make(tmp_path / "demo")
    assert csv == tmp_path / "demo" / "demo.csv"
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["image_path", "text", "audio_path", "label", "split"]
    assert len(frame) == 60
    assert frame["split"].value_counts().to_dict() == {"train": 42, "val": 9, "test": 9}
    assert frame["image_path"].iloc[7] == "images/00007.png" and frame["audio_path"].iloc[7] == "audio/00007.wav"
    assert set(frame["label"]) <= set(LABELS)
    for image, audio in zip(frame["image_path"], frame["audio_path"]):
        with Image.open(csv.parent / image) as img:
            assert img.mode == "RGB" and img.size == (32, 32)
        info = sf.info(str(csv.parent / audio))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (8000, 1, 2000, "PCM_16")
    assert not list(tmp_path.glob(".*tmp-*")), "the temporary folder is left behind"


def test_split_counts_round(tmp_path):
    frame = pd.read_csv(_make(tmp_path / "demo", num_samples=37))
    n_held = round(0.15 * 37)
    assert frame["split"].value_counts().to_dict() == {"train": 37 - 2 * n_held, "val": n_held, "test": n_held}


def test_label_is_shape_plus_colour(big):
    frame = pd.read_csv(big)
    colours = frame["text"].map(_colour)
    shapes = frame["image_path"].map(lambda p: _shape(big.parent / p))
    labels = frame["label"].map(LABELS.index)
    assert ((shapes + colours) % 3 == labels).all()
    assert not frame["text"].str.contains("circle|square|triangle").any(), "a caption names the shape"
    for colour in range(3):  # neither modality alone determines the label
        assert labels[colours == colour].nunique() > 1
        assert labels[shapes == colour].nunique() > 1
    assert frame["text"].nunique() > 10, "captions should vary in wording"


def test_image_is_grey_and_audio_pitch_names_the_colour(big):
    frame = pd.read_csv(big).head(30)
    for image, text, audio in zip(frame["image_path"], frame["text"], frame["audio_path"]):
        pixels = np.asarray(Image.open(big.parent / image)).astype(int)
        shape = pixels.mean(axis=2) > 115
        assert np.ptp(pixels[shape], axis=1).max() == 0, "the shape must be grey, not coloured"
        wave, rate = sf.read(str(big.parent / audio))
        peak = np.fft.rfftfreq(len(wave), 1 / rate)[np.abs(np.fft.rfft(wave)).argmax()]
        expected = (300, 600, 1200)[_colour(text)]
        assert abs(peak - expected) <= 0.03 * expected + 4  # jitter plus one FFT bin


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    one, two, other = _make(tmp_path / "a"), _make(tmp_path / "b"), _make(tmp_path / "c", seed=1)
    assert one.read_text() == two.read_text()
    assert (one.parent / "images/00000.png").read_bytes() == (two.parent / "images/00000.png").read_bytes()
    assert (one.parent / "audio/00000.wav").read_bytes() == (two.parent / "audio/00000.wav").read_bytes()
    assert one.read_text() != other.read_text()


def test_regenerates_only_when_parameters_change(tmp_path):
    csv = _make(tmp_path / "demo")
    before = csv.stat().st_mtime_ns
    assert _make(tmp_path / "demo") == csv
    assert csv.stat().st_mtime_ns == before
    _make(tmp_path / "demo", num_samples=40)
    assert len(pd.read_csv(csv)) == 40
    assert not (tmp_path / "demo" / "images" / "00059.png").exists(), "files of the old data set are left behind"


def test_regenerates_an_incomplete_folder(tmp_path):
    csv = _make(tmp_path / "demo")
    (tmp_path / "demo" / "demo.json").unlink()
    _make(tmp_path / "demo")
    assert (tmp_path / "demo" / "demo.json").is_file() and len(pd.read_csv(csv)) == 60
