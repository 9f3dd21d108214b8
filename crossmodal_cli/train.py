"""`cmtrain`: compose and check the config, train (crossmodal_cli/training.py), evaluate best.ckpt on val and test.

`train(cfg, run_dir) -> metrics` is separate from the Hydra wrapper so tests, sweeps, the Optuna sweeper and the
Python API call it and get the metrics back. `cmtrain resume=RUN_DIR` continues a run exactly where its last.ckpt
left it, with the configuration stored in that checkpoint. torch is imported only once the config has passed its
value checks, so `cmtrain --help` and a mistyped value answer at once.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from crossmodal_cli.config.startup import check_new_run, check_train
from crossmodal_cli.errors import CrossmodalError, Interrupted, exit_on_user_error
from crossmodal_cli.paths import config_dir

check_config = check_train  # the name configs/train.yaml's check callback and the tests use


def train(cfg: DictConfig, run_dir: str | Path, resume: dict | None = None, prune=None) -> dict:
    """Train the configured model into run_dir (continuing from `resume`, a loaded checkpoint, if given; `prune`:
    an Optuna trial's pruning, search/trial.py).

    Returns {"val": {...}, "test": {...} or None, "monitor": "val/NAME", "best_epoch": n, ...} for the best
    checkpoint (what metrics.json holds)."""
    run_dir = Path(run_dir)
    if resume is None:
        check_new_run(run_dir)
    settings = check_train(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)), partial=resume is not None)
    from crossmodal_cli.training import run_training

    return run_training(settings, run_dir, resume, prune)


RUN_FILES = (".hydra", "tokenizer", "labels.json", "data_report.json", "tensorboard", "metrics.jsonl")


def discard_unstarted(run_dir: Path, log_name: str) -> None:
    """Remove what this command put into a run folder before training started (a failed check or Ctrl-C), so
    the same command can run again; the folder itself goes only if nothing else is in it."""
    for name in (*RUN_FILES, log_name):
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()


@hydra.main(config_path=config_dir(), config_name="train", version_base="1.3")
@exit_on_user_error
def run(cfg: DictConfig) -> float | None:
    """The Hydra task function of `cmtrain`. Returns the monitored value (for Hydra sweepers)."""
    from crossmodal_cli.config.resume import resumed_config
    from crossmodal_cli.engine import distributed
    from crossmodal_cli.engine.interrupt import TrainingInterrupted, hand_over
    from crossmodal_cli.config.requeue import requeued_run
    from crossmodal_cli.search.trial import of as optuna_trial

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    state = trial = None
    try:
        trial = optuna_trial(hydra_cfg)  # None outside cmtrain -m hparams_search=optuna
        if cfg.resume:
            cfg, state = resumed_config(cfg.resume, list(hydra_cfg.overrides.task))
        elif requeued_run(run_dir, hydra_cfg) or (trial and trial.resumes(run_dir)):
            cfg, state = resumed_config(str(run_dir), [])  # a pre-empted job, or an interrupted trial, continues
        results = train(cfg, run_dir, resume=state, prune=trial.prune if trial else None)
    except TrainingInterrupted as stop:
        hand_over(stop.signum)  # under submitit: requeue the job (and exit) now that last.ckpt is saved
        if distributed.is_main():
            again = "the same cmtrain -m command (the search retries this trial from it)" if trial else \
                f"cmtrain resume={run_dir}"
            print(f"stopped by {stop}: last.ckpt saved; continue with: {again}", file=sys.stderr, flush=True)
        sys.exit(128 + stop.signum)
    except (CrossmodalError, KeyboardInterrupt) as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:  # into the job's log, where cmsweep finds it
            import logging

            logging.getLogger(__name__).error("%s", err)
        started = (run_dir / "checkpoints").exists()
        earlier = [p for p in (run_dir / ".hydra").glob("*") if p.is_dir()]  # resume-*/rerun-*: not ours alone
        if not started and hydra_cfg.mode == RunMode.RUN and not earlier and distributed.is_main():
            discard_unstarted(run_dir, f"{hydra_cfg.job.name}.log")
        if isinstance(err, KeyboardInterrupt):
            where = f"after training; the checkpoints are in {run_dir / 'checkpoints'}" if started else \
                "before training started; nothing was kept"
            raise Interrupted(f"interrupted (Ctrl-C) {where}") from None
        raise
    split, name = results["monitor"].split("/", 1)
    return (results.get(split) or {}).get(name)


def main() -> None:
    """Console script `cmtrain`, also under torchrun (`torchrun --nproc_per_node=N -m crossmodal_cli.train …`).

    Under torchrun the process group is joined before Hydra composes the config, so every process resolves the
    same run folder (rank 0's start time) and ranks other than 0 are told to write nothing into it (no .hydra/,
    no log file: engine/distributed.py); alone, this only calls the Hydra entry point. `cmtrain --version` prints
    the versions of crossmodal, Python, torch (CUDA, GPUs), transformers and Hydra instead."""
    if sys.argv[1:] == ["--version"]:
        from crossmodal_cli.version import version_line

        print(version_line())
        return
    if not _torchrun():
        run()
        return
    from crossmodal_cli.engine import distributed

    exit_on_user_error(distributed.setup)()
    try:
        sys.argv += exit_on_user_error(distributed.hydra_overrides)(sys.argv[1:])
        run()
    finally:
        distributed.shutdown()


def _torchrun() -> bool:
    """Whether this process is one of several (WORLD_SIZE > 1) or was started by torchrun: then the process group
    is joined first (engine/distributed.setup)."""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1 or "TORCHELASTIC_RUN_ID" in os.environ


if __name__ == "__main__":
    main()
