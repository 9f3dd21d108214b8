"""Sweeps with other Hydra launchers, run as a user would."""
from __future__ import annotations

import json
import os
import subprocess

from console import console


def test_joblib_runs_jobs_in_parallel_with_default_data_workers(tmp_path):
    """With the default trainer.num_workers (auto) DataLoader workers used to fail inside joblib's loky processes
    ('Process' object has no attribute 'env'); both jobs also generate the demo data at the same time."""
    proc = subprocess.run([*console("cmtrain"), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                           "fusion=concat,sum", "trainer.max_epochs=1", "data.demo.num_samples=150",
                           "trainer.progress_bar=false", "hydra.sweep.dir=sweep"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in (0, 1):
        metrics = json.loads((tmp_path / f"sweep/{job}/metrics.json").read_text())
        assert 0 <= metrics["val"]["accuracy"] <= 1
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["demo"]  # one complete copy, no leftovers
