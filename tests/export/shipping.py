"""Helpers of the export tests: a tiny trained run, its bundle, and the comparison of the bundle's predictions with
cmpredict's (the Python API's `load(...).predict`, which equals cmpredict: tests/test_api.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from crossmodal_cli import fit, load
from crossmodal_cli.data.demo import ensure_demo
from crossmodal_cli.exporting import export_bundle
from crossmodal_cli.runtime import load_bundle

FAST = ["trainer.max_epochs=1", "trainer.batch_size=16", "trainer.num_workers=0", "trainer.progress_bar=false",
        "data.audio.seconds=0.5"]


def demo_csv(folder: Path, rows: int = 90) -> Path:
    """The demo data (image, text, audio at 8 kHz), with blank cells in some rows of the test split: missing inputs."""
    csv = ensure_demo(folder, num_samples=rows, seed=0, image_size=32, sample_rate=8000, seconds=0.5)
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    test = frame.index[frame["split"] == "test"]
    for column, row in (("image_path", test[0]), ("text", test[1]), ("audio_path", test[2])):
        frame.loc[row, column] = ""
    frame.to_csv(folder / "with_missing.csv", index=False)
    return folder / "with_missing.csv"


def trained_bundle(csv: Path, folder: Path, overrides: list[str], on_missing: str = "zero") -> tuple[Path, Path]:
    """(run folder, bundle folder) of a one-epoch run on `csv` with `overrides`."""
    run = fit(csv, overrides=[*FAST, f"data.on_missing={on_missing}", *overrides], run_dir=folder / "run")
    export_bundle(run.best_checkpoint, folder / "bundle")
    return run.dir, folder / "bundle"


def assert_same_predictions(run: Path, bundle: Path, rows, on_missing: str = "zero") -> pd.DataFrame:
    """The bundle predicts `rows` as cmpredict does: same columns, rows, labels; numbers within 1e-4."""
    expected = load(run, device="cpu").predict(rows, on_missing=on_missing)
    got = load_bundle(bundle).predict(rows, on_missing=on_missing)
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected) > 0
    for column in expected.columns:
        want, have = expected[column].to_numpy(), got[column].to_numpy()
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(have.astype(float), want, atol=1e-4, rtol=0, err_msg=column)
        else:
            assert [str(v) for v in have] == [str(v) for v in want], column
    return got
