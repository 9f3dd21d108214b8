"""Helpers of the export tests: a tiny trained run, its bundle, and the comparison of the bundle's predictions with
cmpredict's (the Python API's `load(...).predict`, which equals cmpredict: tests/test_api.py)."""
from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from crossmodal_cli import fit, load
from crossmodal_cli.data.demo import ensure_demo
from crossmodal_cli.exporting import export_bundle
from crossmodal_cli.runtime import load_bundle

from console import console

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, json.loads(data) if data else None


@contextlib.contextmanager
def serving(bundle: Path, *args: str, env: dict | None = None) -> Iterator[int]:
    """`cmserve bundle=BUNDLE ARGS` as a real process on a free loopback port, once /health answers; its port."""
    port = free_port()
    proc = subprocess.Popen([*console("cmserve"), f"bundle={bundle}", f"port={port}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(300):
            try:
                if request(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1][-2000:]
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
