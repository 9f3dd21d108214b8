"""The job folders of `cmtrain -m` sweeps as cmsweep reads them: each job's overrides (.hydra/overrides.yaml), its
stored monitor (.hydra/config.yaml), what it wrote (metrics.json, metrics.jsonl) and, for a job that failed or did
not finish, the last error or warning of its log."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from crossmodal_cli.errors import CrossmodalError

LOWER_IS_BETTER = {"loss", "mae", "rmse", "hamming_loss", "median_rank"}  # for runs that stored no monitor_mode
LOG_NAMES = ("train.log", "cmtrain.log")  # Hydra writes ${hydra.job.name}.log; cmtrain's job name is "train"


@dataclass
class Job:
    """One job folder of a sweep: its overrides, and what it wrote (metrics.json, metrics.jsonl)."""

    folder: Path
    overrides: dict[str, str]
    status: str                      # done | pruned (an Optuna trial stopped early) | failed | unfinished
    monitor: str | None = None       # "val/NAME"
    mode: str | None = None          # max | min
    metrics: dict = field(default_factory=dict)
    epochs: list[dict] = field(default_factory=list)
    error: str = ""


def _read(path: Path, parse):
    try:
        return parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise CrossmodalError(f"{path}: not a readable cmtrain file ({type(err).__name__}: {err})") from None


def last_problem(folder: Path) -> str:
    """The last ERROR line of the job's log (else its last WARNING line), without the log prefix; '' if none."""
    for name in LOG_NAMES:
        path = folder / name
        if path.is_file():
            lines = path.read_text(errors="replace").splitlines()
            for level in ("ERROR", "WARNING"):
                found = [line for line in lines if f"[{level}]" in line]
                if found:
                    return re.sub(r"^\[.*?\]\[.*?\]\[\w+\] - ", "", found[-1]).strip()
    return ""


def load_job(folder: Path) -> Job:
    """A job folder -> Job; its monitor and direction from the stored config, else from metrics.json."""
    overrides = _read(folder / ".hydra" / "overrides.yaml", yaml.safe_load) or []
    job = Job(folder, dict(o.split("=", 1) if "=" in o else (o, "") for o in overrides), "done")
    config = folder / ".hydra" / "config.yaml"
    trainer = (_read(config, yaml.safe_load) or {}).get("trainer") or {} if config.is_file() else {}
    if not (folder / "metrics.json").is_file():
        job.error = last_problem(folder)
        job.status = "failed" if "[ERROR]" in "".join(
            (folder / n).read_text(errors="replace") for n in LOG_NAMES if (folder / n).is_file()) else "unfinished"
        return job
    job.metrics = _read(folder / "metrics.json", json.loads)
    if job.metrics.get("pruned_at_epoch"):
        job.status, job.error = "pruned", f"pruned after epoch {job.metrics['pruned_at_epoch']}"
    if (folder / "metrics.jsonl").is_file():
        job.epochs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    job.monitor = trainer.get("monitor") or job.metrics.get("monitor") or "val/accuracy"
    name = job.monitor.split("/", 1)[-1]
    job.mode = trainer.get("monitor_mode") or ("min" if name in LOWER_IS_BETTER else "max")
    if not isinstance((job.metrics.get("val") or {}).get(name), (int, float)):
        raise CrossmodalError(f"{folder / 'metrics.json'}: val.{name} (the monitored metric) is missing or not "
                              f"a number")
    return job


def _job_order(folder: Path) -> tuple:
    return (not folder.name.isdigit(), int(folder.name) if folder.name.isdigit() else 0, folder.name)


def find_jobs(sweeps: list[Path]) -> list[Job]:
    """Every job folder (NUMBER/.hydra/overrides.yaml) of the sweeps, in sweep then job order."""
    jobs = []
    for sweep in sweeps:
        if not sweep.is_dir():
            raise CrossmodalError(f"{sweep}: no such folder; pass the hydra.sweep.dir of a cmtrain -m run")
        folders = sorted((f for f in sweep.iterdir() if (f / ".hydra" / "overrides.yaml").is_file()), key=_job_order)
        if not folders:
            raise CrossmodalError(f"{sweep}: no job folders (NUMBER/.hydra/overrides.yaml); is it a hydra.sweep.dir?")
        jobs += [load_job(f) for f in folders]
    done = {(j.monitor, j.mode) for j in jobs if j.status == "done"}
    if len(done) > 1:
        listed = ", ".join(sorted(f"{m} ({d})" for m, d in done))
        raise CrossmodalError(f"the jobs monitor different metrics ({listed}); compare sweeps of one task and monitor")
    return jobs
