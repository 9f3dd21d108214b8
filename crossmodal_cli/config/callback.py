"""A Hydra callback that checks the config before Hydra creates a run folder.

Hydra makes the job's folder and writes `.hydra/` before it calls the task function, so a check there would
leave a folder behind for every typo. `on_run_start` runs before that: a mistake ends as `error: …` and exit
status 2 with nothing written. With `cmtrain -m` and the basic sweeper, `on_multirun_start` composes and checks
every job of the grid first, so a bad value in job 7 stops the sweep before job 1 starts. (Other sweepers, e.g.
Optuna, choose values as they go: the base config is checked, and each job when it starts.)

`SweepReport` says where `cmsweep` will find a sweep when it ends, and puts a job's failure into its own log
(`train.log`), where `cmsweep` reads the last error of a failed job.
"""
from __future__ import annotations

import copy
import logging
import shlex
from pathlib import Path
from typing import Any, Callable

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.utils import get_method
from omegaconf import DictConfig, open_dict, read_write

from crossmodal_cli.errors import CrossmodalError, exit_on_user_error

log = logging.getLogger(__name__)


def task_config(config: DictConfig) -> DictConfig:
    """The job's config without the `hydra` node, as the task function will receive it."""
    cfg = copy.deepcopy(config)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


def check_folder(key: str, path: str | Path) -> None:
    """The run folder can be made: neither it nor a folder above it is an existing file."""
    path = Path(path).expanduser()
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = "is a file" if candidate == path else f"lies under {candidate}, which is a file"
                raise CrossmodalError(f"{key}={path}: {what}; choose a folder path for the run")
            return


class CheckBeforeRun(Callback):
    """`check`: dotted path of a function (task config) -> None that raises CrossmodalError."""

    def __init__(self, check: str):
        self.check_path = check

    @property
    def check(self) -> Callable[[DictConfig], Any]:
        return get_method(self.check_path)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_user_error(self._run)(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_user_error(self._multirun)(config)

    def _run(self, config: DictConfig) -> None:
        self.check(task_config(config))  # first: the run folder may be made of checked values (cmeval: ckpt)
        check_folder("hydra.run.dir", config.hydra.run.dir)

    def _multirun(self, config: DictConfig) -> None:
        check_folder("hydra.sweep.dir", config.hydra.sweep.dir)
        if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            self.check(task_config(config))  # the values the sweeper does not choose
            return
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        arguments = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        arguments += list(config.hydra.overrides.task)
        jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)[0]
        loader = GlobalHydra.instance().config_loader()
        for number, overrides in enumerate(jobs):
            job = loader.load_sweep_config(config, list(overrides))
            try:
                self.check(task_config(job))
            except CrossmodalError as err:
                sweep = [o for o in overrides if o not in config.hydra.overrides.task]
                where = f"job {number} ({' '.join(sweep)})" if sweep else f"job {number}"
                raise CrossmodalError(f"{where}: {err}; no job was started") from None
        log.info("checked the config of all %d jobs", len(jobs))


class SweepReport(Callback):
    """At the end of `cmtrain -m`: where the jobs are and the `cmsweep` command that compares them. A job that
    fails with an exception Hydra catches gets it as an ERROR line in its log."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.FAILED:
            err = job_return._return_value
            first = (str(err).strip().splitlines() or [""])[0]
            log.error("job failed: %s%s", type(err).__name__, f": {first}" if first else "")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        jobs = sum(1 for f in sweep.glob("*/.hydra/overrides.yaml")) if sweep.is_dir() else 0
        print(f"sweep finished: {jobs} job folders in {sweep}; compare them with: cmsweep {shlex.quote(str(sweep))}",
              flush=True)
