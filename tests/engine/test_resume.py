"""Exact resume: a run killed (SIGKILL) or interrupted (SIGINT) mid-epoch and resumed ends identical to one that
was never stopped."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from console import console

CMTRAIN = console("cmtrain")
ARGS = ["data.demo.num_samples=200", "trainer.max_epochs=3", "trainer.batch_size=16", "trainer.num_workers=0",
        "trainer.progress_bar=false", "trainer.checkpoint_every_n_steps=1", "trainer.modality_dropout=0.2",
        "data.augment=true"]


def start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*CMTRAIN, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, err[-3000:]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def stop_after_checkpoints(proc: subprocess.Popen, ckpt: Path, writes: int, signum: int) -> None:
    """Send `signum` once last.ckpt has been (re)written `writes` times."""
    seen, last = 0, None
    while seen < writes:
        assert proc.poll() is None, "training ended before it could be stopped"
        stamp = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        if stamp != last and stamp is not None:
            seen, last = seen + 1, stamp
        time.sleep(0.005)
    proc.send_signal(signum)


def weights(run: Path, name: str = "last.ckpt") -> dict:
    return torch.load(run / "checkpoints" / name, weights_only=True)["model"]


def records(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_second", "data_wait_fraction")} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("ref")
    finish(start(cwd, *ARGS, "hydra.run.dir=run"))
    return cwd / "run"


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert records(a) == records(b)
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())


def test_sigkill_at_a_random_step_then_resume_is_identical(reference, tmp_path):
    shared_demo = reference.parent / "data"
    os.symlink(shared_demo, tmp_path / "data")
    proc = start(tmp_path, *ARGS, "hydra.run.dir=run")
    stop_after_checkpoints(proc, tmp_path / "run/checkpoints/last.ckpt", random.Random().randint(2, 20),
                           signal.SIGKILL)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    finish(start(tmp_path, "resume=run"))
    assert_same_run(reference, tmp_path / "run")
    assert list((tmp_path / "run/.hydra").glob("resume-*/config.yaml"))


def test_sigint_saves_and_says_how_to_resume(reference, tmp_path):
    os.symlink(reference.parent / "data", tmp_path / "data")
    proc = start(tmp_path, *ARGS, "hydra.run.dir=run")
    stop_after_checkpoints(proc, tmp_path / "run/checkpoints/last.ckpt", 5, signal.SIGINT)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert f"continue with: cmtrain resume={tmp_path / 'run'}" in err
    assert "Traceback" not in err
    # stopped inside epoch 1: a different batch size would skip rows, so it is refused (a loaded machine may
    # deliver the signal late, at the epoch's end, where changing it is allowed: then there is nothing to refuse)
    before = (tmp_path / "run/checkpoints/last.ckpt").read_bytes()
    if torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["progress"]["batch"] > 0:
        refused = start(tmp_path, f"resume={tmp_path / 'run'}", "trainer.batch_size=8")
        _, err = refused.communicate(timeout=900)
        assert refused.returncode == 2 and "Traceback" not in err
        assert re.search(r"error: trainer.batch_size=8: last.ckpt stopped inside epoch \d+ \(after \d+ batches of "
                         r"trainer.batch_size=16\), so trainer.batch_size must stay 16 until the epoch ends", err), err
        assert (tmp_path / "run/checkpoints/last.ckpt").read_bytes() == before
    finish(start(tmp_path, f"resume={tmp_path / 'run'}"))
    assert_same_run(reference, tmp_path / "run")


def test_resume_may_extend_training_but_not_change_the_model(reference, tmp_path):
    os.symlink(reference.parent / "data", tmp_path / "data")
    proc = start(tmp_path, "resume=" + str(reference), "optimizer=sgd")
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 2 and "only trainer.* settings can change when resuming (got optimizer=sgd)" in err


@pytest.mark.parametrize("batch,change,refused", [(5, {"batch_size": 8}, True), (5, {"drop_last": False}, True),
                                                  (5, {"max_epochs": 9}, False), (0, {"batch_size": 8}, False)])
def test_batch_size_changes_wait_for_an_epoch_end(batch, change, refused):
    from omegaconf import OmegaConf

    from crossmodal_cli.errors import CrossmodalError
    from crossmodal_cli.config.resume import check_epoch_position as _check_epoch_position

    before = {"batch_size": 16, "accumulate_grad_batches": 1, "drop_last": True, "max_epochs": 3}
    after = OmegaConf.create({**before, **change})
    progress = {"epoch": 2, "batch": batch}
    if refused:
        key = next(iter(change))
        with pytest.raises(CrossmodalError, match=rf"^trainer.{key}=.*: last.ckpt stopped inside epoch 2 \(after 5 "
                                                  rf"batches of trainer.batch_size=16\)"):
            _check_epoch_position(Path("run/checkpoints/last.ckpt"), progress, before, after)
    else:
        _check_epoch_position(Path("run/checkpoints/last.ckpt"), progress, before, after)
