"""Shared fixtures: tiny data sets written into tmp_path."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image


def pytest_configure(config):
    """Keep the validation cache of test data out of the user's ~/.cache (subprocesses inherit this)."""
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="crossmodal-test-cache-")


def pytest_sessionstart(session):
    """A package whose native library does not load (a wheel built against another torch, say) stops the run at
    once with one line naming it, instead of failing hundreds of tests (checked once, in the controlling process)."""
    if hasattr(session.config, "workerinput"):
        return
    from native import broken_package

    broken = broken_package()
    if broken:
        pytest.exit(f"a native extension does not load: {broken}; reinstall with `make install` (the lock's "
                    f"versions) or check the package's build against torch", returncode=3)


def write_dataset(folder: Path, n: int = 12, with_split: bool = False, seed: int = 0) -> Path:
    """A CSV with n rows of real PNG/WAV files and two labels; returns its path."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    (folder / "wav").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / "img" / f"{i}.png")
        sf.write(folder / "wav" / f"{i}.wav", rng.normal(0, 0.1, 4000).astype("float32"), 8000)
        row = {"image_path": f"img/{i}.png", "text": f"caption number {i}", "audio_path": f"wav/{i}.wav",
               "label": "cat" if i % 2 else "dog"}
        if with_split:
            row["split"] = ("train", "train", "val", "test")[i % 4] if i >= 4 else ("train", "val", "train", "val")[i]
        rows.append(row)
    path = folder / "data.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def dataset_csv(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "ds")


def write_pairs_csv(folder: Path, num_samples: int) -> Path:
    """Demo rows relabelled with their (shape, colour) pair, recovered from the demo label and caption: nine
    classes; the image alone knows the shape and the text alone the colour, so a unimodal model is right at most one
    time in three and a fusion of both every time. Returns folder/"pairs.csv" (the demo data beside it)."""
    from crossmodal_cli.data.demo import COLOURS, LABELS, SHAPES, ensure_demo

    frame = pd.read_csv(ensure_demo(folder, num_samples=num_samples, seed=0, image_size=32, sample_rate=8000,
                                    seconds=0.5))
    colour = frame["text"].str.extract(f"({'|'.join(COLOURS)})")[0].map(COLOURS.index)
    shape = (frame["label"].map(LABELS.index) - colour) % 3
    frame["label"] = [f"{SHAPES[s]}-{COLOURS[c]}" for s, c in zip(shape, colour)]
    frame.to_csv(folder / "pairs.csv", index=False)
    return folder / "pairs.csv"



def settings_of(cfg):
    """A composed cmtrain config as the typed settings the factory and pipeline read, without the start-up checks
    (so a test can hand a value only the build refuses straight to the build)."""
    from omegaconf import OmegaConf

    from crossmodal_cli.settings import from_values
    from crossmodal_cli.settings.run import RunSettings

    values = OmegaConf.to_container(cfg, resolve=True)
    values.pop("hydra", None)
    return from_values(RunSettings, values)
