"""Config mistakes stop the real commands before anything is written: one `error:` line, exit status 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from console import console


def run(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*console(command), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("args,message", [
    (["trainer.grad_clip=-1"], "error: trainer.grad_clip=-1: must be a number > 0, or null"),
    (["scheduler=step", "scheduler.gamma=abc"], "error: scheduler.gamma=abc: must be a number > 0"),
    (["hydra.run.dir=afile"], "error: hydra.run.dir=afile: is a file; choose a folder path for the run"),
])
def test_cmtrain_refuses_before_making_a_run_folder(tmp_path, args, message):
    (tmp_path / "afile").write_text("not a folder")
    proc = run("cmtrain", *args, cwd=tmp_path)
    assert one_error_line(proc).startswith(message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no outputs/, no data/demo


def test_a_data_error_leaves_no_half_made_run_folder(tmp_path):
    (tmp_path / "bad.csv").write_text("text,class\nhello,a\n")  # found only when the data is read
    proc = run("cmtrain", "data=csv", "data.csv=bad.csv", "hydra.run.dir=run", cwd=tmp_path)
    assert "column 'label' (data.columns.label) not found" in one_error_line(proc)
    assert not (tmp_path / "run").exists()
    proc = run("cmtrain", "data=csv", "data.csv=missing.csv", "hydra.run.dir=run", cwd=tmp_path)
    assert one_error_line(proc) == "error: data.csv=missing.csv: CSV file not found"


def test_every_job_of_a_sweep_is_checked_before_the_first_starts(tmp_path):
    proc = run("cmtrain", "-m", "fusion=concat,sum", "trainer.max_epochs=1,-1", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert one_error_line(proc) == ("error: job 1 (fusion=concat trainer.max_epochs=-1): trainer.max_epochs=-1: must be "
                                    "a whole number >= 0; no job was started")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("args,message", [
    ([], "error: ckpt: missing; pass ckpt=PATH/TO/checkpoints/best.ckpt"),
    (["ckpt=nope.ckpt"], "error: ckpt=nope.ckpt: checkpoint not found"),
    (["ckpt=nope.ckpt", "trainer.batch_size=0"], "error: trainer.batch_size=0: must be a whole number >= 1, or null"),
])
def test_cmeval_refuses_before_making_a_folder(tmp_path, args, message):
    proc = run("cmeval", *args, cwd=tmp_path)
    assert one_error_line(proc).startswith(message)
    assert list(tmp_path.iterdir()) == []


def test_hydra_composition_errors_keep_hydras_message_and_exit_1(tmp_path):
    """An unknown option or key is Hydra's own error (documented in docs/reliability.md): exit status 1."""
    proc = run("cmtrain", "fusion=atention", cwd=tmp_path)
    assert proc.returncode == 1 and "Could not find 'fusion/atention'" in proc.stderr and "attention" in proc.stderr
    proc = run("cmtrain", "trainer.max_epoch=1", cwd=tmp_path)
    assert proc.returncode == 1 and "Key 'max_epoch' is not in struct" in proc.stderr


def test_ctrl_c_before_training_is_one_line_exit_130_and_leaves_nothing(tmp_path):
    """Ctrl-C while the files are being checked (simulated: load_data raises KeyboardInterrupt inside the real
    cmtrain entry point)."""
    code = ("import sys, crossmodal_cli.train as t, crossmodal_cli.training as run\n"
            "def interrupted(*args, **kwargs):\n    raise KeyboardInterrupt\n"
            "run.load_data = interrupted\nsys.argv = ['cmtrain', 'hydra.run.dir=run']\nt.main()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        "error: interrupted (Ctrl-C) before training started; nothing was kept"]
    assert not (tmp_path / "run").exists()
