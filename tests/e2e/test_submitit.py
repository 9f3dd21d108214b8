"""`hydra/launcher=submitit_local` (Hydra's submitit launcher, the local executor that stands in for SLURM): a sweep
completes, and a job that gets submitit's pre-emption signal saves, is requeued and continues to the same result as
a job never stopped. (One test: a pre-empted one-job sweep covers the launcher, the requeue and the end-of-sweep
message; each submitit job costs a process start and a full run on 2 cores.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from console import console

TINY = ["data.demo.num_samples=150", "trainer.progress_bar=false", "data.image_size=32"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def cmtrain(*args: str, cwd: Path, **kwargs):
    return subprocess.Popen([*console("cmtrain"), *args], cwd=cwd, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def submitit_workers(folder: Path) -> list[int]:
    """Processes running a submitted job of this test: the submitit worker, whose command names the folder (not
    its DataLoader worker processes, forked from it with the same command)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "submitit.core._submit" in command and any(str(folder) in part for part in command):
            found.append(int(proc.name))
    parent = {pid: int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                            if line.startswith("PPid:"))) for pid in found}
    return [pid for pid in found if parent[pid] not in found]


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_ends_as_if_never_stopped(tmp_path):
    args = ["trainer.max_epochs=4", *TINY]
    plain = cmtrain(*args, "hydra.run.dir=plain", cwd=tmp_path)
    out = plain.communicate(timeout=900)[0]
    assert plain.returncode == 0, out[-3000:]

    sweep = cmtrain("-m", "hydra/launcher=submitit_local", *args, "hydra.sweep.dir=sweep", cwd=tmp_path)
    epochs = tmp_path / "sweep/0/metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (epochs.is_file() and epochs.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = submitit_workers(tmp_path / "sweep")
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGUSR2)  # what SLURM sends (via submitit's --signal) before pre-emption
    out = sweep.communicate(timeout=900)[0]
    assert sweep.returncode == 0, out[-3000:]

    log = (tmp_path / "sweep/0/train.log").read_text()
    assert "SIGUSR2 received: finishing the current step" in log
    assert "handing over to submitit to requeue this job" in log
    assert "resuming" in log
    job, reference = (json.loads((tmp_path / f"{d}/metrics.json").read_text()) for d in ("sweep/0", "plain"))
    assert (job["val"], job["test"], job["best_epoch"]) == (reference["val"], reference["test"],
                                                            reference["best_epoch"])
    assert [json.loads(line)["epoch"] for line in epochs.read_text().splitlines()] == [1, 2, 3, 4]
    assert (tmp_path / "sweep/.submitit").is_dir() and "compare them with: cmsweep sweep" in out
