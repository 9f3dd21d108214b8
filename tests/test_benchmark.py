"""scripts/benchmark.py (make bench) runs on CPU at its small size and produces every figure."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


@pytest.mark.slow
def test_benchmark_small_produces_positive_figures(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--preset", "small", "--rows", "192", "--data",
                           str(tmp_path / "data"), "--json", str(tmp_path / "bench.json")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "bench.json").read_text())
    rates = ["loader_plain_0_workers", "loader_preprocessed_0_workers", "ceiling", "end_to_end", "textbook"]
    assert all(results[key] > 0 for key in rates), results
    assert 0 <= results["data_wait_fraction"] < 1
    assert set(results["ratios"]) == {"loader_per_core_x_cores / ceiling", "end_to_end / ceiling",
                                      "end_to_end / textbook"}  # bf16 / fp32 only on CUDA
    assert all(value > 0 for value in results["ratios"].values())
    assert "end_to_end / ceiling" in proc.stdout and len(list((tmp_path / "data").glob("rows-192/images/*.jpg"))) == 192
