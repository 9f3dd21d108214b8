"""`cmtrain -m hparams_search=optuna`: Hydra's Optuna sweeper runs real trials and gets each job's monitored value."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from console import console

# One search, on a task whose metric is minimised (the direction maximise is the default; every task's direction
# is checked without running trials in tests/config/test_search.py).
REGRESSION = ["data=csv", "data.csv=colours/data.csv", "data.image_size=32", "task=regression",
              "data.columns.label=value", "trainer.max_epochs=1", "trainer.progress_bar=false"]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "metric", "best"), [(REGRESSION, "mae", min)], ids=["regression-minimises-mae"])
def test_a_three_trial_optuna_search_optimises_the_monitored_metric(tmp_path, args, metric, best):
    from crossmodal_cli.data.colours import write_colours

    if "data=csv" in args:
        write_colours(tmp_path / "colours")
    proc = subprocess.run([*console("cmtrain"), "-m", "hparams_search=optuna",
                           "hydra.sweeper.n_trials=3", *args, "hydra.sweep.dir=search"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in (tmp_path / "search").iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2"]
    values = []
    for job in jobs:
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra/overrides.yaml").read_text()))
        assert 1e-4 <= float(overrides["optimizer.lr"]) <= 3e-3
        assert 0 <= float(overrides["optimizer.weight_decay"]) <= 0.1
        assert 0 <= float(overrides["fusion.dropout"]) <= 0.3
        assert overrides["fusion"] in {"concat", "sum", "product", "gated", "bilinear"}
        assert overrides["trainer.batch_size"] in {"16", "32", "64"}
        values.append(json.loads((job / "metrics.json").read_text())["val"][metric])
    result = yaml.safe_load((tmp_path / "search/optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(best(values))  # the task function returns the monitored value
    assert "sweep finished: 3 job folders in search; compare them with: cmsweep search" in proc.stdout

    table = subprocess.run([*console("cmsweep"), "search"], cwd=tmp_path, capture_output=True,
                           text=True, check=True).stdout
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 2 + 3
    assert (tmp_path / "search/summary.png").is_file()
