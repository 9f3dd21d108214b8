"""scripts/sweep_table.py on hand-written job folders: it reads each job's monitored metric, whatever the task."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts/sweep_table.py"


def job(folder: Path, overrides: list[str], val: dict, monitor: str | None, config_monitor: str | None = None):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra/overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / ".hydra/config.yaml").write_text(f"trainer:\n  monitor: {config_monitor or 'null'}\n")
    metrics = {"val": val, "test": val, "best_epoch": 3, "parameters": {"total": 2e5, "fusion": 5e4}}
    if monitor:
        metrics["monitor"] = monitor
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "seconds": 1.5}) + "\n")


def table(*args: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=True)
    return [line for line in proc.stdout.splitlines() if line.startswith("| ")]


def test_a_regression_sweep_is_compared_by_its_monitored_metric_smallest_first(tmp_path):
    job(tmp_path / "s/0", ["fusion=concat"], {"mae": 0.9, "r2": 0.5, "loss": 1.0}, "val/mae")
    job(tmp_path / "s/1", ["fusion=product"], {"mae": 0.4, "r2": 0.8, "loss": 0.5}, "val/mae")
    rows = table(str(tmp_path / "s"), "--sort", "val/mae", "--no-seconds")
    assert rows[0] == "| `fusion` | val mae | test mae | best epoch | parameters | fusion parameters | fusion reports |"
    assert [row.split(" | ")[:2] for row in rows[2:]] == [["| product", "0.400"], ["| concat", "0.900"]]


def test_jobs_written_before_metrics_json_named_the_monitor_use_the_stored_config(tmp_path):
    job(tmp_path / "s/0", ["seed=1"], {"accuracy": 0.5, "loss": 1.0}, None)
    job(tmp_path / "s/1", ["seed=2"], {"f1_macro": 0.7, "accuracy": 0.6, "loss": 1.0}, None, "val/f1_macro")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "s")], capture_output=True, text=True)
    assert proc.returncode == 1 and "the jobs monitor different metrics (accuracy, f1_macro)" in proc.stderr
