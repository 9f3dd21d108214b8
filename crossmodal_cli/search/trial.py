"""The job's side of an Optuna search: the trial this job runs, its pruning, and the folder a retried trial reuses.

The sweeper (search/sweeper.py) gives every job `hydra.sweeper.trial=NUMBER` and the study's storage; the job opens
the study, reports the monitored metric after every epoch (`prune`), and the study's pruner says whether the trial
should go on. A retried trial runs in the folder of the trial it repeats and continues from its last.ckpt.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)

SWEEPER = "hydra_plugins.crossmodal_optuna_sweeper.crossmodal_optuna_sweeper.OptunaSweeper"


class Trial:
    """The Optuna trial a job runs (see `of`)."""

    def __init__(self, study, number: int):
        import optuna

        self.study, self.number = study, number
        frozen = study.get_trials(deepcopy=False)[number]
        self.retry_of = frozen.user_attrs.get("crossmodal:retry_of")
        self.trial = optuna.trial.Trial(study, frozen._trial_id)

    def resumes(self, run_dir: Path) -> bool:
        """Whether this job repeats an interrupted trial whose run (its last.ckpt) is in run_dir."""
        return self.retry_of is not None and (run_dir / "checkpoints" / "last.ckpt").is_file()

    def prune(self, epoch: int, value: float, last: bool = False) -> bool:
        """Report the epoch's monitored value; True when the pruner stops this trial (never after its `last`
        epoch: it has finished)."""
        if value is None or math.isnan(value):
            return False
        self.trial.report(float(value), epoch)
        stop = not last and self.trial.should_prune()
        if stop:
            log.info("pruned: trial %d stops after epoch %d (%s %.4f; %s)", self.number, epoch, "monitored value",
                     value, type(self.study.pruner).__name__)
        return stop


def of(hydra_cfg: DictConfig) -> Trial | None:
    """The trial of this job, or None when the job is not part of an Optuna search."""
    sweeper = hydra_cfg.get("sweeper") or {}
    if sweeper.get("_target_") != SWEEPER or sweeper.get("trial") is None:
        return None
    import optuna

    from crossmodal_cli.search.study import storage

    pruner = instantiate(sweeper.pruner) if sweeper.get("pruner") else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=sweeper.study_name, pruner=pruner,
                              storage=storage(sweeper.storage, Path(str(hydra_cfg.sweep.dir))))
    return Trial(study, int(sweeper.trial))


