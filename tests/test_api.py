"""The Python API: `fit` equals `cmtrain`, `load(...).predict` equals `cmpredict`, `evaluate` equals `cmeval`,
predictions on in-memory images, the README example as written, and imports that stay cheap."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from crossmodal_cli import fit, load
from crossmodal_cli.data.colours import HUES, write_colours
from crossmodal_cli.errors import CrossmodalError

from console import console

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["data.columns.label=hue", "data.image_size=32", "modalities=[image,text]", "trainer.max_epochs=3",
             "trainer.batch_size=16", "trainer.num_workers=0", "trainer.progress_bar=false", "fusion=gated"]


def command(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([*console(name), *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same training through `fit` and through `cmtrain`, and a fresh labelled CSV of other rows."""
    folder = tmp_path_factory.mktemp("api")
    csv = write_colours(folder / "train", n=160)
    api = fit(csv, overrides=OVERRIDES, run_dir=folder / "api")
    command("cmtrain", "data=csv", f"data.csv={csv}", *OVERRIDES, f"hydra.run.dir={folder / 'cli'}", cwd=folder)
    return folder, api, write_colours(folder / "new", n=40, seed=1)


def test_fit_and_cmtrain_give_identical_metrics_and_run_folders(runs):
    folder, api, _ = runs
    cli = json.loads((folder / "cli/metrics.json").read_text())
    assert api.metrics == cli
    assert api.metrics == json.loads((api.dir / "metrics.json").read_text())
    assert api.best_checkpoint == folder / "api/checkpoints/best.ckpt" and api.best_checkpoint.is_file()
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", "labels.json", "metrics.jsonl",
                 "checkpoints/last.ckpt", "curves.png"):
        assert (folder / "api" / name).is_file() and (folder / "cli" / name).is_file(), name
    assert api.metrics["test"]["accuracy"] > 0.5  # 6 hues: chance 1/6


def test_predict_equals_cmpredict_and_evaluate_equals_cmeval(runs):
    folder, api, new = runs
    command("cmpredict", f"ckpt={api.best_checkpoint}", f"data.csv={new}", "trainer.num_workers=0",
            "hydra.run.dir=pred", cwd=folder)
    expected = pd.read_csv(folder / "pred/predictions.csv")
    model = load(api.dir, device="cpu")
    got = model.predict(new)
    assert list(got.columns) == list(expected.columns)
    written = io.StringIO()
    got.to_csv(written, index=False, float_format="%.6f")
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(written.getvalue())), expected)
    command("cmeval", f"ckpt={api.best_checkpoint}", f"data.test_csv={new}", "trainer.num_workers=0",
            "importance=false", "hydra.run.dir=ev", cwd=folder)
    assert model.evaluate(new) == json.loads((folder / "ev/metrics.json").read_text())["test"]


def test_in_memory_images_predict_as_their_files(runs):
    folder, api, new = runs
    model = load(api.best_checkpoint, device="cpu")
    frame = pd.read_csv(new).drop(columns=["hue", "label", "value", "tags"])
    paths = [str(new.parent / p) for p in frame["image_path"]]
    from_files = model.predict(frame.assign(image_path=paths))
    uploads = frame.assign(image_path=[Path(p).read_bytes() if i % 2 else Image.open(p)
                                       for i, p in enumerate(paths)])
    from_memory = model.predict(uploads)
    probabilities = [f"prob_{h}" for h in sorted(HUES)]
    np.testing.assert_array_equal(from_memory[probabilities].to_numpy(), from_files[probabilities].to_numpy())
    assert from_memory["predicted"].tolist() == from_files["predicted"].tolist()
    assert from_memory["image"].iloc[1].startswith("<") and from_memory["source"].iloc[0].endswith("DataFrame")
    proba = model.predict_proba(uploads)
    assert list(proba.columns) == sorted(HUES) and proba.index.tolist() == list(range(len(frame)))
    np.testing.assert_allclose(proba.to_numpy(), from_files[probabilities].to_numpy(), atol=1e-6)
    damaged = uploads.assign(image_path=[b"not an image" if i == 2 else v for i, v in enumerate(uploads["image_path"])])
    kept = model.predict_proba(damaged, on_missing="drop")
    assert kept.index.tolist() == [i for i in range(len(frame)) if i != 2]  # positions in the DataFrame, not shifted
    np.testing.assert_allclose(kept.to_numpy(), proba.drop(index=2).to_numpy(), atol=1e-6)
    vectors = model.embed(uploads)
    assert vectors["row"].tolist() == list(range(len(frame)))
    assert {"fused", "pooled/image", "pooled/text"} <= set(vectors) and vectors["fused"].shape[0] == len(frame)


def test_fit_on_a_dataframe_with_in_memory_images_keeps_its_data_in_the_run(tmp_path):
    csv = write_colours(tmp_path / "ds", n=60)
    frame = pd.read_csv(csv)
    frame["image_path"] = [Image.open(csv.parent / p).copy() for p in frame["image_path"]]
    run = fit(frame, overrides=[*OVERRIDES, "trainer.max_epochs=1"], run_dir=tmp_path / "run")
    written = pd.read_csv(tmp_path / "run/data.csv")
    assert len(written) == 60 and all(Path(p).is_file() for p in written["image_path"])
    assert (tmp_path / "run/checkpoints/best.ckpt").is_file() and "val" in run.metrics


def test_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(CrossmodalError, match=r"^trainer.max_epochs=-1: must be a whole number >= 0"):
        fit(overrides=["trainer.max_epochs=-1"], run_dir=tmp_path / "a")
    assert not (tmp_path / "a" / "checkpoints").exists()
    with pytest.raises(CrossmodalError, match=r"^overrides: "):
        fit(overrides=["fusion=no_such_fusion"], run_dir=tmp_path / "b")
    with pytest.raises(CrossmodalError, match=r"no checkpoint at .*best.ckpt"):
        load(tmp_path / "missing")
    with pytest.raises(CrossmodalError, match=r"^fit: data must be a CSV path or a pandas DataFrame"):
        fit(42, run_dir=tmp_path / "c")


def test_the_readme_example_runs_as_written(tmp_path):
    """The ```python block of README.md's "Python API" section, run in an empty folder."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accuracy" in proc.stdout


def test_importing_the_package_and_the_entry_points_imports_no_torch():
    """`cmtrain --help` and a mistyped value must not wait for torch (~2.5 s), torchmetrics or transformers."""
    code = ("import sys, crossmodal_cli, crossmodal_cli.train, crossmodal_cli.evaluate, crossmodal_cli.predict, "
            "crossmodal_cli.api; heavy = [m for m in ('torch', 'torchmetrics', 'transformers', 'torchvision') "
            "if m in sys.modules]; print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]


def test_a_mistyped_value_is_refused_before_torch_is_imported():
    """cmtrain's start-up check answers a wrong plain value (trainer.*, data.*) before it imports any `_target_`."""
    code = ("import sys\nfrom hydra import compose, initialize_config_dir\n"
            "from crossmodal_cli.config.startup import check_train\nfrom crossmodal_cli.errors import CrossmodalError\n"
            "from crossmodal_cli.paths import config_dir\n"
            "with initialize_config_dir(config_dir=config_dir(), version_base='1.3'):\n"
            "    cfg = compose('train', overrides=['trainer.max_epochs=-1'])\n"
            "try:\n    check_train(cfg)\nexcept CrossmodalError as err:\n    print(err)\n"
            "print([m for m in ('torch', 'torchmetrics', 'transformers') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines() == ["trainer.max_epochs=-1: must be a whole number >= 0", "[]"], proc.stderr[-2000:]
