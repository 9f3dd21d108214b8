"""Checkpoints written before the config schema, pretrained encoders and the feature cache still evaluate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from crossmodal_cli.engine.checkpoint import save_checkpoint
from crossmodal_cli.evaluate import evaluate
from crossmodal_cli.paths import config_dir
from crossmodal_cli.train import train
from tests.conftest import write_dataset

NEW_KEYS = {"data": ["resize", "separator"], "trainer": ["feature_cache", "cache_dir"]}
TRANSFER = ["freeze", "unfreeze_at_epoch", "lr_scale", "layer_decay", "image_size", "resize"]


def as_version_1(state: dict) -> dict:
    """The checkpoint as the first release wrote it: no stored architectures, a config without the keys added since
    (data.image_size was always a number then)."""
    config = yaml.safe_load(state["config"])
    for group, keys in NEW_KEYS.items():
        for key in keys:
            config[group].pop(key, None)
    config["data"]["image_size"] = 32
    for node in config["encoder"].values():
        for key in TRANSFER:
            node.pop(key, None)
    old = {k: v for k, v in state.items() if k not in ("encoders", "format", "version")}
    return {**old, "config": yaml.safe_dump(config)}


def test_a_version_1_checkpoint_evaluates(tmp_path):
    csv = write_dataset(tmp_path / "ds", n=24, with_split=True)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["data=csv", f"data.csv={csv}", "data.image_size=32", "trainer.max_epochs=1",
                                          "trainer.batch_size=4", "trainer.num_workers=0", "trainer.progress_bar=false",
                                          "data.text.max_length=16", "data.audio.sample_rate=8000",
                                          "data.audio.seconds=0.5"])
    trained = train(cfg, tmp_path / "run")
    state = torch.load(tmp_path / "run/checkpoints/best.ckpt", weights_only=True)
    old = tmp_path / "old.ckpt"
    save_checkpoint(as_version_1(state), old)
    assert "encoders" not in torch.load(old, weights_only=True)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        eval_cfg = compose("eval", overrides=[f"ckpt={old}", "trainer.num_workers=0"])
    (tmp_path / "ev").mkdir()
    metrics = evaluate(eval_cfg, tmp_path / "ev")
    assert metrics["accuracy"] == pytest.approx(trained["test"]["accuracy"])
    assert metrics["loss"] == pytest.approx(trained["test"]["loss"], rel=1e-5)
    assert json.loads((tmp_path / "ev/metrics.json").read_text())["test"]["loss"] == pytest.approx(metrics["loss"])


FIXTURES = Path(__file__).parent / "fixtures"


def same_numbers(expected):
    """`expected` with every float compared to 1e-5 (relative; 1e-7 absolute) and all else exactly."""
    if isinstance(expected, dict):
        return {k: same_numbers(v) for k, v in expected.items()}
    if isinstance(expected, list):
        return [same_numbers(v) for v in expected]
    return pytest.approx(expected, rel=1e-5, abs=1e-7) if isinstance(expected, float) else expected


def test_a_checkpoint_from_before_the_redesign_resumes_bit_for_bit_and_evaluates(tmp_path):
    """tests/fixtures/gated-epoch1-b89ef98.ckpt was written by commit b89ef98 (before the typed settings and the
    split of build.py): epoch-001.ckpt of a 2-epoch gated-fusion run on `write_dataset(n=24, with_split=True)`.
    Resumed here, it ends with the metrics that commit gave for the uninterrupted run (gated-epoch2-b89ef98.json):
    bit for bit on a CPU of the kind that wrote the fixture; another CPU's float kernels (AVX2 and AVX-512 sum in
    another order) move the last digits of every number alike, so numbers are compared to 1e-5, everything else
    exactly. cmeval evaluates it."""
    from crossmodal_cli.config.resume import resumed_config

    csv = write_dataset(tmp_path / "ds", n=24, with_split=True)
    state = torch.load(FIXTURES / "gated-epoch1-b89ef98.ckpt", weights_only=True)
    config = yaml.safe_load(state["config"])
    config["data"]["csv"] = str(csv)
    run = tmp_path / "run"
    for name in ("last.ckpt", "best.ckpt"):  # epoch 1 was the best so far: the run folder held it as both
        save_checkpoint({k: v for k, v in {**state, "config": yaml.safe_dump(config)}.items()
                         if k not in ("format", "version")}, run / "checkpoints" / name)
    cfg, resume = resumed_config(str(run), [])
    results = train(cfg, run, resume=resume)
    expected = json.loads((FIXTURES / "gated-epoch2-b89ef98.json").read_text())
    results = json.loads(json.dumps(results))
    # what metrics.json has gained since b89ef98: the trainable and per-encoder parameter counts (issue #22)
    assert set(results["parameters"]) - set(expected["parameters"]) == {"trainable", "encoders"}
    assert results["parameters"]["trainable"] == expected["parameters"]["total"]  # nothing frozen in this run
    results["parameters"] = {k: results["parameters"][k] for k in expected["parameters"]}
    assert results == same_numbers(expected)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        eval_cfg = compose("eval", overrides=[f"ckpt={run / 'checkpoints/best.ckpt'}", "trainer.num_workers=0"])
    (tmp_path / "ev").mkdir()
    assert evaluate(eval_cfg, tmp_path / "ev") == same_numbers(expected["test"])


def test_resuming_with_a_length_whose_schedule_has_another_shape_is_one_line(tmp_path):
    """A 1-epoch run has no warm-up phase (clipped to 20 % of 6 steps: 0); with trainer.max_epochs=2 the schedule
    gains one, so the stored schedule state cannot be loaded: one line, not a KeyError from torch."""
    from crossmodal_cli.config.resume import resumed_config
    from crossmodal_cli.errors import CrossmodalError

    csv = write_dataset(tmp_path / "ds", n=24, with_split=True)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["data=csv", f"data.csv={csv}", "data.image_size=32", "trainer.max_epochs=1",
                                          "trainer.batch_size=4", "trainer.num_workers=0", "trainer.progress_bar=false",
                                          "data.text.max_length=16", "data.audio.sample_rate=8000",
                                          "data.audio.seconds=0.5", "modalities=[image,text]"])
    train(cfg, tmp_path / "run")
    stored, state = resumed_config(str(tmp_path / "run"), ["trainer.max_epochs=2"])
    with pytest.raises(CrossmodalError, match=r"^trainer.max_epochs=2: the learning-rate schedule of this run"):
        train(stored, tmp_path / "run", resume=state)
