"""`make gpu-check` (scripts/gpu_check.py, which runs scripts/benchmark.py) on this CPU, started the way the GPU
machine starts it: a plain python3 that is not the .venv's, the packages on PYTHONPATH, no console scripts."""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_without_the_venv_and_reports_the_benchmark(tmp_path):
    python = Path(sys.base_prefix) / "bin" / "python3"  # the interpreter the .venv was made from, outside it
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{python.parent}{os.pathsep}/usr/bin:/bin", PYTHONPATH=os.pathsep.join(site.getsitepackages()),
               PYTHONWARNINGS="ignore")
    proc = subprocess.run(["make", "-C", str(ROOT), "gpu-check", f"GPU_PY={python}", f"OUT={tmp_path / 'report'}",
                           f"GPU_CHECK_ARGS=--data {tmp_path / 'data'}"], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "report/gpu-check.json").read_text())
    assert report["versions"].startswith("crossmodal ") and report["cuda"] == torch.cuda.is_available()
    assert report["benchmark_complete"] and report["benchmark_exit_status"] == 0
    tests = report["tests"]
    assert tests["tests"] >= 20 and tests["failed"] == 0 and tests["exit_status"] == 0, tests
    if not report["cuda"]:
        assert tests["skipped"] == tests["tests"]
        assert "no CUDA GPU here: the gpu tests skip" in proc.stdout
    results = report["benchmark"]
    rates = ["loader_plain_0_workers", "loader_preprocessed_0_workers", "ceiling", "end_to_end", "textbook"]
    assert all(results[key] > 0 for key in rates), results
    assert 0 <= results["data_wait_fraction"] < 1
    expected = {"loader_per_core_x_cores / ceiling", "end_to_end / ceiling", "end_to_end / textbook"}
    if report["cuda"]:  # bf16 / fp32 and compiled / eager only on CUDA, with the targets
        expected |= {"bf16 / fp32 (ceiling)", "compiled / eager (ceiling)"}
        assert set(report["targets"]) == {"end_to_end / ceiling", "end_to_end / textbook", "bf16 / fp32 (ceiling)",
                                          "data_wait_fraction"}
    assert set(results["ratios"]) == expected
    assert all(value > 0 for value in results["ratios"].values())
    assert len(list((tmp_path / "data").glob("rows-192/images/*.jpg"))) == 192
    log = (tmp_path / "report/gpu-check.log").read_text()
    assert "end_to_end / ceiling" in log and "gpu tests:" in log


def test_a_step_past_its_timeout_is_stopped_with_what_it_started(tmp_path):
    """A step that stays silent past its timeout is ended, and so is a child it left holding the output pipe (as
    torch.compile's workers or a torchrun rank would), so gpu-check moves on to the next step at once."""
    import importlib.util
    import time

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    log = gpu_check.Log(tmp_path / "log.txt")
    started = time.monotonic()
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
            "print('started', flush=True); time.sleep(60)"
    assert log.step("silent", [sys.executable, "-c", child], timeout=3) is None
    assert time.monotonic() - started < 20
    assert log.step("quick", [sys.executable, "-c", "print('done')"], timeout=30) == 0
    text = (tmp_path / "log.txt").read_text()
    assert "started" in text and "silent: stopped after 3 s" in text and "done" in text


def test_the_benchmark_writes_what_it_measured_so_far(tmp_path):
    """Each measurement rewrites --json with the ratios it allows, so a run stopped midway keeps its figures."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    results = {"loader_preprocessed_0_workers": 1000.0, "ceiling": 100.0}
    benchmark.write_partial(results, 2, str(tmp_path / "b.json"))
    assert json.loads((tmp_path / "b.json").read_text())["ratios"] == {"loader_per_core_x_cores / ceiling": 20.0}
    results.update(end_to_end=90.0, textbook=3.0, ceiling_fp32=50.0)
    benchmark.write_partial(results, 2, str(tmp_path / "b.json"))
    assert json.loads((tmp_path / "b.json").read_text())["ratios"] == {
        "loader_per_core_x_cores / ceiling": 20.0, "end_to_end / ceiling": 0.9, "bf16 / fp32 (ceiling)": 2.0,
        "end_to_end / textbook": 30.0}
