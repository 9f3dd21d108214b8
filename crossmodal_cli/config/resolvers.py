"""The OmegaConf resolvers the YAML configs name, registered when `crossmodal_cli.config` is imported.

* `${cm_run_dir:${resume},DEFAULT}`: a resumed run continues in its own folder.
* `${cm_hydra_subdir:${resume},STAMP}`: .hydra for a new run folder, .hydra/resume-STAMP or rerun-STAMP where one
  exists, so the original record of the run is never overwritten.
* `${cm_now:PATTERN}`: Hydra's `${now:}`, but rank 0's start time under torchrun, so every process resolves the
  same run folder.
* `${cm_eval_dir:CKPT,STAMP}`: cmeval's folder beside the checkpoint's run.
* `${cm_sweep_direction:}`: maximize or minimize, as the configured task's monitored metric improves (Optuna).

None imports torch unless a process group exists already (torchrun), so `--help` and a config error come fast.
"""
from __future__ import annotations

import copy
import datetime as dt
import sys
from pathlib import Path

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write


def resume_checkpoint(resume: str) -> Path:
    """RUN_DIR -> RUN_DIR/checkpoints/last.ckpt; a .ckpt path as it is."""
    path = Path(resume).expanduser()
    return path if path.suffix == ".ckpt" else path / "checkpoints" / "last.ckpt"


def _run_dir_of(resume: str | None, default: str) -> str:
    return default if resume is None else str(resume_checkpoint(resume).resolve().parent.parent)


def _hydra_subdir(resume: str | None, stamp: str, *, _root_: DictConfig) -> str:
    """The folder is the job's own one in a sweep (cmtrain -m)."""
    hydra_cfg = _root_.hydra
    if hydra_cfg.get("mode") == RunMode.MULTIRUN:
        job_dir = Path(hydra_cfg.sweep.dir) / str(hydra_cfg.sweep.subdir)
    else:
        job_dir = Path(hydra_cfg.run.dir)
    if not (job_dir / ".hydra" / "config.yaml").exists():
        return ".hydra"
    return f".hydra/{'resume' if resume is not None else 'rerun'}-{stamp}"


def _now(pattern: str) -> str:
    distributed = sys.modules.get("crossmodal_cli.engine.distributed")  # imported by cmtrain under torchrun only
    start = distributed.start_time() if distributed is not None else dt.datetime.now()
    return start.strftime(pattern)


def _eval_dir(ckpt: str, stamp: str) -> str:
    """RUN/eval-STAMP beside the run of RUN/checkpoints/NAME.ckpt; DIR/eval-STAMP for a .ckpt anywhere else."""
    path = Path(ckpt).expanduser().resolve()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return str(run / f"eval-{stamp}")


def _sweep_direction(*, _root_: DictConfig) -> str:
    """Optuna's sweeper reads `hydra.sweeper.direction` once, when the sweep starts; trainer.monitor may be null
    there (the task's own metric), so the task is asked the way cmtrain asks it."""
    from crossmodal_cli.config.startup import resolve_monitor, run_settings
    from crossmodal_cli.factory import build_task

    cfg = copy.deepcopy(_root_)
    with read_write(cfg), open_dict(cfg):
        cfg.pop("hydra", None)
    settings = run_settings(cfg)
    trainer = resolve_monitor(settings.trainer, build_task(settings))
    return "maximize" if trainer.monitor_mode == "max" else "minimize"


OmegaConf.register_new_resolver("cm_run_dir", _run_dir_of, replace=True)
OmegaConf.register_new_resolver("cm_hydra_subdir", _hydra_subdir, replace=True)
OmegaConf.register_new_resolver("cm_now", _now, use_cache=True, replace=True)
OmegaConf.register_new_resolver("cm_eval_dir", _eval_dir, replace=True)
OmegaConf.register_new_resolver("cm_sweep_direction", _sweep_direction, replace=True)
