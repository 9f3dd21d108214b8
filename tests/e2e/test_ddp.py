"""cmtrain under torchrun: two gloo processes on the CPU (the NCCL path needs GPUs and is not run here).

The comparison with one process uses the text model without dropout (encoder.text.dropout=0 fusion.dropout=0):
with the same global batch, two processes then compute the same optimizer steps up to the order of floating-point
sums, so validation and test metrics agree within TOLERANCE, and AUROC within AUROC_TOLERANCE: without the image
this model stays at chance, its probabilities are nearly tied, and a difference in the 7th digit can swap two
rows' order (measured: one swapped pair among 22 test rows, 0.0014). (The image and audio encoders' BatchNorm
layers normalise each process's half batch, which changes the numbers slightly, as plain DDP does.)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from console import console

TOLERANCE = 1e-4        # measured: ~1e-7 on val/test loss, 0 on accuracy, f1, ...; 6e-6 on weights
AUROC_TOLERANCE = 0.01  # a few near-tied rows in another order
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "crossmodal_cli.train"]
CMTRAIN = console("cmtrain")
ARGS = ["data.demo.num_samples=150", "trainer.max_epochs=3", "trainer.batch_size=16", "trainer.num_workers=0",
        "trainer.progress_bar=false", "modalities=[text]", "encoder.text.dropout=0", "fusion.dropout=0",
        # DDP's harder paths: no_sync on the first batch of each step, an encoder unfrozen after DDP was built
        "trainer.accumulate_grad_batches=2", "encoder.text.freeze=true", "encoder.text.unfreeze_at_epoch=2",
        "trainer.device=cpu"]  # gloo on any machine (tests/gpu/ runs NCCL)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def start(cwd: Path, *args: str, two: bool = True, resume: bool = False) -> subprocess.Popen:
    """torchrun with 2 processes (or cmtrain alone) with ARGS (for a resume: the checkpoint's config) and `args`."""
    command = [*(TORCHRUN if two else CMTRAIN), *([] if resume else ARGS), *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def results(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_close_metrics(a: dict, b: dict) -> None:
    for split in ("val", "test"):
        assert a[split].keys() == b[split].keys()
        for name, value in a[split].items():
            tolerance = AUROC_TOLERANCE if name.startswith("auroc") else TOLERANCE
            assert value == pytest.approx(b[split][name], abs=tolerance), f"{split}/{name}"


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[Path, str]:
    """A 2-process run without hydra.run.dir: (its cwd, the combined output of torchrun and both ranks)."""
    cwd = tmp_path_factory.mktemp("ddp")
    return cwd, finish(start(cwd))


def test_two_processes_make_one_run_folder_written_by_rank_0_alone(two):
    cwd, out = two
    runs = list((cwd / "outputs").glob("*/*"))
    assert len(runs) == 1, runs  # both ranks resolved rank 0's time stamp
    run = runs[0]
    assert sorted(p.name for p in run.iterdir()) == sorted(
        [".hydra", "checkpoints", "curves.png", "data_report.json", "labels.json", "metrics.json", "metrics.jsonl",
         "tensorboard", "tokenizer", "train.log"])
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len({p.name.split(".")[4] for p in (run / "tensorboard").iterdir()}) == 1  # one writer process
    log = (run / "train.log").read_text()
    assert [log.count(f"epoch {e}/3 train") for e in (1, 2, 3)] == [1, 1, 1]
    assert [out.count(f"epoch {e}/3 train") for e in (1, 2, 3)] == [1, 1, 1]  # rank 1 logs nothing
    assert "torchrun: 2 processes (backend gloo); global batch 16 = 8 per process" in log
    assert [r["epoch"] for r in records(run)] == [1, 2, 3]
    assert len(torch.load(run / "checkpoints/last.ckpt", weights_only=True)["rng_ranks"]) == 2


def test_two_processes_give_the_metrics_of_one_with_the_same_global_batch(two, tmp_path):
    cwd, _ = two
    os.symlink(cwd / "data", tmp_path / "data")
    finish(start(tmp_path, "hydra.run.dir=one", two=False))
    run = next((cwd / "outputs").glob("*/*"))
    assert_close_metrics(results(run), results(tmp_path / "one"))
    for a, b in zip(records(run), records(tmp_path / "one"), strict=True):
        for key in ("train/loss", "val/loss", "val/accuracy"):
            assert a[key] == pytest.approx(b[key], abs=TOLERANCE), (a["epoch"], key)
    two_weights = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["model"]
    one_weights = torch.load(tmp_path / "one/checkpoints/last.ckpt", weights_only=True)["model"]
    assert two_weights.keys() == one_weights.keys()  # the unwrapped model's keys (no "module.")
    for key, value in one_weights.items():  # measured: at most 6e-6 apart
        torch.testing.assert_close(two_weights[key], value, rtol=0, atol=TOLERANCE, msg=key)


def test_a_two_process_run_stopped_by_sigterm_resumes_with_one_process(two, tmp_path):
    cwd, _ = two
    os.symlink(cwd / "data", tmp_path / "data")
    proc = start(tmp_path, "hydra.run.dir=run", "trainer.checkpoint_every_n_steps=1")
    ckpt, seen, last = tmp_path / "run/checkpoints/last.ckpt", 0, None
    while seen < 2:  # the second step's checkpoint: inside epoch 1 of 3 (3 steps of 2 batches each)
        assert proc.poll() is None, "training ended before it could be stopped"
        stamp = ckpt.stat().st_mtime_ns if ckpt.exists() else None
        if stamp is not None and stamp != last:
            seen, last = seen + 1, stamp
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)  # to torchrun, which forwards it to both workers
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert out.count("stopped by SIGTERM: last.ckpt saved") == 1, out[-3000:]  # rank 0 says it, once
    progress = torch.load(ckpt, weights_only=True)["progress"]
    assert 2 <= progress["step"] < 9

    resumed = finish(start(tmp_path, "resume=run", two=False, resume=True))
    assert f"resuming run/checkpoints/last.ckpt at epoch {progress['epoch']}, step {progress['step']}" in resumed
    assert [r["epoch"] for r in records(tmp_path / "run")] == [1, 2, 3]
    assert_close_metrics(results(tmp_path / "run"), results(next((cwd / "outputs").glob("*/*"))))


def test_a_global_batch_that_does_not_divide_among_the_processes_is_one_line(two, tmp_path):
    cwd, _ = two
    os.symlink(cwd / "data", tmp_path / "data")
    proc = start(tmp_path, "hydra.run.dir=run", "trainer.batch_size=15")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert ("error: trainer.batch_size=15: the global batch must divide evenly among the 2 processes; use a "
            "multiple of 2 (e.g. trainer.batch_size=14)") in out
    assert "crossmodal_cli/" not in out  # no traceback of ours (torchrun prints its own summary of the exit)
    assert not (tmp_path / "run").exists()
