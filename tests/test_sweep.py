"""`cmsweep` on hand-written job folders: grouping over seeds, sort order by each job's monitor, failed jobs, the
separation verdict, the files it writes and its one-line errors."""
from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

from console import console

CMSWEEP = console("cmsweep")


def job(folder: Path, overrides: list[str], val: dict | None, monitor: str | None = None,
        config_monitor: str | None = None, mode: str | None = None, log: str = "", seconds: float = 1.5):
    """A job folder as cmtrain writes it; val=None: a job that never wrote metrics.json."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra/overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / ".hydra/config.yaml").write_text(f"trainer:\n  monitor: {config_monitor or 'null'}\n"
                                               f"  monitor_mode: {mode or 'null'}\n")
    if log:
        (folder / "train.log").write_text(log)
    if val is None:
        return
    metrics = {"val": val, "test": val, "best_epoch": 3, "parameters": {"total": 2e5, "fusion": 5e4}}
    if monitor:
        metrics["monitor"] = monitor
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "seconds": seconds}) + "\n" for e in (1, 2)))


def cmsweep(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*CMSWEEP, *args], capture_output=True, text=True, check=check)


def rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]


def test_a_regression_sweep_is_sorted_smallest_first_by_the_mode_in_its_stored_config(tmp_path):
    job(tmp_path / "s/0", ["fusion=concat"], {"mae": 0.9, "r2": 0.5, "loss": 1.0}, "val/mae", "val/mae", "min")
    job(tmp_path / "s/1", ["fusion=product"], {"mae": 0.4, "r2": 0.8, "loss": 0.5}, "val/mae", "val/mae", "min")
    job(tmp_path / "s/2", ["fusion=gated"], {"mae": 0.6, "r2": 0.7, "loss": 0.7}, "val/mae", "val/mae", "min")
    out = cmsweep(str(tmp_path / "s"), "--no-seconds").stdout
    table = rows(out)
    assert table[0] == ["`fusion`", "val mae", "test mae", "best epoch", "epochs", "parameters", "fusion parameters",
                        "fusion reports"]
    assert [r[:2] for r in table[2:]] == [["product", "0.400"], ["gated", "0.600"], ["concat", "0.900"]]
    assert "with one seed per configuration seed noise cannot be judged" in out
    with open(tmp_path / "s/summary.csv") as f:
        records = list(csv.DictReader(f))
    assert [r["fusion"] for r in records] == ["product", "gated", "concat"]
    assert float(records[0]["val/r2"]) == 0.8 and "seconds" not in records[0]
    assert (tmp_path / "s/summary.md").read_text().startswith("| `fusion` |")
    assert (tmp_path / "s/summary.png").stat().st_size > 1000


def test_seeds_share_a_row_and_a_clear_gap_is_called_separated(tmp_path):
    for i, (fusion, seed, acc) in enumerate([("concat", 1, 0.50), ("concat", 2, 0.54), ("product", 1, 0.95),
                                             ("product", 2, 0.97)]):
        job(tmp_path / f"s/{i}", [f"fusion={fusion}", f"seed={seed}"], {"accuracy": acc, "loss": 1 - acc},
            "val/accuracy", seconds=2.0)
    out = cmsweep(str(tmp_path / "s")).stdout
    table = rows(out)
    assert table[0][:4] == ["`fusion`", "seeds", "val accuracy", "test accuracy"] and "seconds" in table[0]
    assert table[2][:3] == ["product", "2", "0.960 ± 0.014"] and table[3][:3] == ["concat", "2", "0.520 ± 0.028"]
    assert table[2][table[0].index("seconds")] == "4.0"  # two epochs of 2 s
    assert "Best by val/accuracy: fusion=product (0.960), runner-up fusion=concat (0.520): separated beyond seed " \
           "noise" in out
    assert "twice its standard error" in out


def test_a_gap_within_the_seed_spread_is_not_separated(tmp_path):
    for i, (fusion, acc) in enumerate([("a", 0.60), ("a", 0.80), ("b", 0.65), ("b", 0.70)]):
        job(tmp_path / f"s/{i}", [f"fusion={fusion}", f"seed={i}"], {"accuracy": acc, "loss": 0.5}, "val/accuracy")
    out = cmsweep(str(tmp_path / "s")).stdout
    assert "runner-up fusion=b (0.675): not separated from seed noise" in out


def test_failed_and_unfinished_jobs_are_rows_with_their_status_and_last_error(tmp_path):
    job(tmp_path / "s/0", ["fusion=concat"], {"accuracy": 0.9, "loss": 0.3}, "val/accuracy")
    job(tmp_path / "s/1", ["fusion=gated"], None,
        log="[2026-11-24 10:00:00,000][crossmodal_cli.train][INFO] - run folder: x\n"
            "[2026-11-24 10:00:01,000][crossmodal_cli.train][ERROR] - trainer.grad_clip=-1: must be > 0\n")
    job(tmp_path / "s/2", ["fusion=sum"], None,
        log="[2026-11-24 10:00:01,000][crossmodal_cli.engine.interrupt][WARNING] - SIGTERM received: saving\n")
    proc = cmsweep(str(tmp_path / "s"))
    table = rows(proc.stdout)
    assert table[0][1] == "status" and table[0][-1] == "last error"
    assert table[2][:3] == ["concat", "done", "0.900"]
    assert table[3][:2] == ["gated", "failed"] and table[3][-1] == "trainer.grad_clip=-1: must be > 0"
    assert table[4][:2] == ["sum", "unfinished"] and table[4][-1] == "SIGTERM received: saving"
    assert "Only one finished configuration" in proc.stdout


def test_compact_prints_the_docs_table_in_job_order(tmp_path):
    job(tmp_path / "s/0", ["fusion=concat"], {"accuracy": 0.5, "loss": 1.0}, "val/accuracy")
    job(tmp_path / "s/1", ["fusion=product"], {"accuracy": 0.9, "loss": 0.5}, "val/accuracy")
    out = cmsweep(str(tmp_path / "s"), "--compact").stdout
    assert out.splitlines() == [
        "| `fusion` | val accuracy | test accuracy | best epoch | parameters | fusion parameters | s / epoch | fusion reports |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        "| concat | 0.500 | 0.500 | 3 | 0.20 M | 50 k | 1.50 |  |",
        "| product | 0.900 | 0.900 | 3 | 0.20 M | 50 k | 1.50 |  |"]
    assert not (tmp_path / "s/summary.csv").exists()


def test_old_jobs_without_a_stored_monitor_use_metrics_json_and_mixed_monitors_are_refused(tmp_path):
    job(tmp_path / "s/0", ["seed=1"], {"accuracy": 0.5, "loss": 1.0}, None)
    job(tmp_path / "s/1", ["seed=2"], {"f1_macro": 0.7, "accuracy": 0.6, "loss": 1.0}, None, "val/f1_macro")
    proc = cmsweep(str(tmp_path / "s"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: the jobs monitor different metrics (val/accuracy (max), val/f1_macro (max)); "
                                   "compare sweeps of one task and monitor")


def test_a_folder_that_is_not_a_sweep_is_one_line(tmp_path):
    proc = cmsweep(str(tmp_path / "nowhere"), check=False)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "no such folder; pass the hydra.sweep.dir of a cmtrain -m run" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = cmsweep(str(tmp_path / "empty"), check=False)
    assert proc.returncode == 2 and "no job folders" in proc.stderr


def test_a_failed_seed_is_a_row_of_its_own_beside_its_configurations_finished_seeds(tmp_path):
    job(tmp_path / "s/0", ["fusion=concat", "seed=42"], {"accuracy": 0.9, "loss": 0.3}, "val/accuracy")
    job(tmp_path / "s/1", ["fusion=concat", "seed=1"], None,
        log="[2026-11-24 10:00:01,000][crossmodal_cli.config.callback][ERROR] - job failed: RuntimeError: CUDA OOM\n")
    job(tmp_path / "s/2", ["fusion=sum", "seed=42"], {"accuracy": 0.8, "loss": 0.3}, "val/accuracy")
    table = rows(cmsweep(str(tmp_path / "s")).stdout)
    assert [r[:4] for r in table[2:4]] == [["concat", "1", "done", "0.900"], ["sum", "1", "done", "0.800"]]
    assert table[4][:3] == ["concat", "seed 1", "failed"] and table[4][-1] == "job failed: RuntimeError: CUDA OOM"


def test_equal_means_without_spread_are_a_tie_in_sweep_order(tmp_path):
    for i, (fusion, seed) in enumerate([("sum", 1), ("sum", 2), ("product", 1), ("product", 2)]):
        job(tmp_path / f"s/{i}", [f"fusion={fusion}", f"seed={seed}"], {"accuracy": 1.0, "loss": 0.01}, "val/accuracy")
    out = cmsweep(str(tmp_path / "s")).stdout
    assert "fusion=sum (1.000), runner-up fusion=product (1.000): a tie" in out


def test_folds_share_a_row_like_seeds_and_both_together_are_folds_times_seeds(tmp_path):
    for i, (fusion, fold, acc) in enumerate([("concat", 0, 0.50), ("concat", 1, 0.60), ("concat", 2, 0.55),
                                             ("product", 0, 0.90), ("product", 1, 0.94), ("product", 2, 0.92)]):
        job(tmp_path / f"cv/{i}", [f"fusion={fusion}", "data.folds=3", f"data.fold={fold}"], {"accuracy": acc})
    table = rows(cmsweep(str(tmp_path / "cv"), "--no-seconds").stdout)
    assert table[0][:3] == ["`fusion`", "folds", "val accuracy"]
    assert [r[:3] for r in table[2:]] == [["product", "3", "0.920 ± 0.020"], ["concat", "3", "0.550 ± 0.050"]]
    for i, (fold, seed) in enumerate([(0, 1), (1, 1), (0, 2), (1, 2)]):
        job(tmp_path / f"both/{i}", ["data.folds=2", f"data.fold={fold}", f"seed={seed}"], {"accuracy": 0.5 + i / 10})
    table = rows(cmsweep(str(tmp_path / "both"), "--no-seconds").stdout)
    assert table[0][:2] == ["folds × seeds", "val accuracy"] and table[2][:2] == ["4", "0.650 ± 0.129"]


def test_a_pruned_trial_is_a_row_of_its_own_with_its_status_and_values(tmp_path):
    job(tmp_path / "s/0", ["optimizer.lr=0.001"], {"accuracy": 0.9})
    job(tmp_path / "s/1", ["optimizer.lr=0.0001"], {"accuracy": 0.3})
    metrics = json.loads((tmp_path / "s/1/metrics.json").read_text())
    (tmp_path / "s/1/metrics.json").write_text(json.dumps({**metrics, "pruned_at_epoch": 1}))
    table = rows(cmsweep(str(tmp_path / "s"), "--no-seconds").stdout)
    assert table[0][:4] == ["`optimizer.lr`", "status", "val accuracy", "test accuracy"]
    assert table[2][:3] == ["0.001", "done", "0.900"]
    assert table[3][:3] == ["0.0001", "pruned", "0.300"] and table[3][-1] == "pruned after epoch 1"
