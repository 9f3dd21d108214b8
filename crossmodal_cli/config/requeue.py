"""A scheduler job that is started again continues its own run.

SLURM (through submitit) stops a job at a pre-emption or its time limit and starts the *same* job again — the same
job id — in the same job folder. The first start saved checkpoints/last.ckpt when it was stopped (and at every
epoch end, so also after a hard kill); the new start finds it there. `cmtrain` refuses to train into a folder that
holds a run, so that a user's command never overwrites one; a requeued job is told apart by its job id: the job
folder's `.hydra/hydra.yaml` records `hydra.job.id` (the SLURM job id, or the local executor's), and a new command
always runs under a new id.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig


def requeued_run(run_dir: Path, hydra_cfg: DictConfig) -> bool:
    """True when this is a submitit job started again in its own job folder, which holds last.ckpt written by a
    job of the same id."""
    if "submitit" not in str(hydra_cfg.launcher.get("_target_", "")):
        return False
    last, record = run_dir / "checkpoints" / "last.ckpt", run_dir / ".hydra" / "hydra.yaml"
    if not (last.is_file() and record.is_file()):
        return False
    try:
        stored = yaml.safe_load(record.read_text())["hydra"]["job"].get("id")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return False
    return stored is not None and str(stored) == str(hydra_cfg.job.get("id"))
