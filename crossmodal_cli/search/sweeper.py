"""The Optuna search as a Hydra sweeper: ask trials, run them as Hydra jobs (any launcher), tell their results.

The study lives in its storage (search/study.py), so the same command run again continues it: trials that finished
(done, pruned or failed) are kept, an interrupted one runs again in its own folder from its last.ckpt, and
`n_trials` counts every trial of the study. Several processes can work on one study at once: each asks a trial only
while fewer than `n_trials` are finished or running. Job folders are named by trial number (SWEEP_DIR/NUMBER/).
At the end the best trial's overrides and the parameter importances go to SWEEP_DIR/optimization_results.yaml.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import yaml
from hydra.core.plugins import Plugins
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.search import space, study as studies

log = logging.getLogger(__name__)
FOLDER = "crossmodal:folder"  # user attribute: the job folder (SWEEP_DIR/FOLDER) the trial ran in


class Search:
    """One `cmtrain -m hparams_search=optuna` process (see the module docstring)."""

    def __init__(self, settings: DictConfig, config: DictConfig, hydra_context, task_function):
        self.s, self.config = settings, config
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def _study(self):
        import optuna

        s = self.s
        self.storage_spec = str(s.storage) if s.storage else str(self.sweep_dir / "optuna.journal")
        self.storage = studies.storage(self.storage_spec, self.sweep_dir)
        existing = {x.study_name: x for x in optuna.get_all_study_summaries(self.storage)}
        if s.study_name in existing and existing[s.study_name].direction.name.lower() != s.direction:
            raise CrossmodalError(f"hydra.sweeper.study_name={s.study_name}: the study in {self.storage_spec} "
                                  f"{existing[s.study_name].direction.name.lower()}s, this search {s.direction}s "
                                  f"(trainer.monitor differs); use another study_name or hydra.sweep.dir")
        started = existing[s.study_name].n_trials if s.study_name in existing else 0
        sampler = OmegaConf.to_container(s.sampler, resolve=True) if s.get("sampler") else None
        if sampler and "seed" in sampler:  # the same command continues with new proposals, not the first ones again
            sampler["seed"] = None if sampler["seed"] is None else int(sampler["seed"]) + started
        pruner = instantiate(s.pruner) if s.get("pruner") else optuna.pruners.NopPruner()
        return optuna.create_study(study_name=s.study_name, storage=self.storage, load_if_exists=True,
                                   direction=s.direction, pruner=pruner,
                                   sampler=instantiate(sampler) if sampler else None), started

    def run(self, arguments: list[str]) -> None:
        from optuna.trial import TrialState

        searched, fixed = space.parse(OmegaConf.to_container(self.s.params, resolve=True) or {}, arguments)
        if not searched:
            raise CrossmodalError("hydra.sweeper.params is empty and the command line sweeps nothing: nothing to "
                                  "search; give ranges (configs/hparams_search/optuna.yaml)")
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        study, started = self._study()
        studies.retry_stale(study, float(self.s.grace_seconds))
        log.info("Optuna study '%s' in %s: %d trials so far, %d wanted (hydra.sweeper.n_trials); searching %s",
                 self.s.study_name, self.storage_spec, started, self.s.n_trials, ", ".join(searched))
        with studies.Lease(self.storage, float(self.s.heartbeat_seconds)) as lease:
            while True:
                trials = study.get_trials(deepcopy=False)
                again = {t.user_attrs.get(studies.RETRY_OF) for t in trials}  # counted once, as their retry
                counted = [t for t in trials if t.state != TrialState.WAITING and t.number not in again]
                batch = min(int(self.s.n_jobs), int(self.s.n_trials) - len(counted))
                if batch <= 0:
                    break
                self._batch(study, lease, searched, fixed, batch)
        self._report(study)

    def _batch(self, study, lease, searched: dict, fixed: list[str], size: int) -> None:
        asked = [study.ask(searched) for _ in range(size)]
        jobs, folders = [], {}
        for trial in asked:
            lease.hold(trial)
            retry_of = trial.user_attrs.get(studies.RETRY_OF)
            folder = str(study.get_trials(deepcopy=False)[retry_of].user_attrs.get(FOLDER, retry_of)) \
                if retry_of is not None else str(trial.number)
            trial.set_user_attr(FOLDER, folder)
            folders[trial.number] = self.sweep_dir / folder
            if retry_of is not None and not (self.sweep_dir / folder / "checkpoints" / "last.ckpt").is_file():
                shutil.rmtree(self.sweep_dir / folder, ignore_errors=True)  # stopped before its first epoch ended
            jobs.append([*fixed, *(space.as_override(k, v) for k, v in trial.params.items()),
                         f"hydra.sweep.subdir={folder}", f"hydra.sweeper.trial={trial.number}",
                         space.as_override("hydra.sweeper.storage", self.storage_spec)])
            log.info("trial %d%s in %s: %s", trial.number, f" (trial {retry_of} again)" if retry_of is not None
                     else "", self.sweep_dir / folder, " ".join(jobs[-1][len(fixed):len(fixed) + len(trial.params)]))
        told: set[int] = set()
        try:
            returns = self.launcher.launch(jobs, initial_job_idx=asked[0].number)
            for trial, ret in zip(asked, returns):
                self._tell(study, trial, ret, folders[trial.number])
                told.add(trial.number)
                lease.release(trial.number)
        except BaseException:  # Ctrl-C, SIGTERM, a launcher error: the unfinished trials run again next time
            for trial in asked:
                if trial.number not in told:
                    lease.release(trial.number)
                    studies.give_back(study, trial.number, trial.params, "this sweep was stopped")
            raise

    def _tell(self, study, trial, ret, folder: Path) -> None:
        from hydra.core.utils import JobStatus
        from optuna.trial import TrialState

        if ret.status != JobStatus.COMPLETED:
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, ret._return_value)
            return
        metrics = folder / "metrics.json"
        pruned = metrics.is_file() and yaml.safe_load(metrics.read_text()).get("pruned_at_epoch")
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d pruned after epoch %d", trial.number, pruned)
            return
        value = ret.return_value
        if value is None:
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d returned no monitored value", trial.number)
            return
        study.tell(trial, float(value))
        log.info("trial %d: %s", trial.number, value)

    def _report(self, study) -> None:
        from crossmodal_cli.search.results import write_results

        write_results(study, self.sweep_dir, self.storage_spec)


def search_settings(sweeper: Any) -> DictConfig:
    """The sweeper's settings (hydra.sweeper without its _target_), checked."""
    settings = OmegaConf.create(OmegaConf.to_container(sweeper, resolve=True))  # in the full config: ${seed}
    with open_dict(settings):
        settings.pop("_target_", None)
    for key in ("n_trials", "n_jobs"):
        if not isinstance(settings.get(key), int) or settings.get(key) < 1:
            raise CrossmodalError(f"hydra.sweeper.{key}={settings.get(key)}: give a whole number ≥ 1")
    if settings.direction not in ("maximize", "minimize"):
        raise CrossmodalError(f"hydra.sweeper.direction={settings.direction}: maximize or minimize")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return settings
