"""`cmtrain`: build everything from the config, fit, evaluate the best checkpoint on val and test.

`train(cfg, run_dir) -> metrics` is separate from the Hydra wrapper so tests, sweeps and the Optuna sweeper
can call it and get the metrics back. `cmtrain resume=RUN_DIR` continues a run exactly where its last.ckpt
left it, with the configuration stored in that checkpoint.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from crossmodal_cli.build import (absolute_data_paths, architectures_of, build_model, build_task,
                                  build_tokenizer, check_buildable, load_data, make_loaders, resolve_device,
                                  resolve_precision, seed_everything, to_yaml)
from crossmodal_cli.config.schema import upgrade, validate_train
from crossmodal_cli.data.dataset import resolve_workers
from crossmodal_cli.data.modalities import tokenizer_from_json, tokenizer_to_json
from crossmodal_cli.data.table import MODALITIES
from crossmodal_cli.distill import attach_teacher, check_teacher
from crossmodal_cli.engine import distributed
from crossmodal_cli.engine.checkpoint import Checkpointer, load_checkpoint, restore_rng, save_checkpoint, task_state
from crossmodal_cli.engine.interrupt import TrainingInterrupted, hand_over
from crossmodal_cli.engine.loop import Trainer, TrainSettings, evaluate
from crossmodal_cli.engine.reporting import RunReporter, metrics_table, run_hparams, write_json
from crossmodal_cli.engine.speed import speed_settings
from crossmodal_cli.optim import build_optimizer
from crossmodal_cli.errors import CrossmodalError, Interrupted, exit_on_user_error
from crossmodal_cli.paths import config_dir
from crossmodal_cli.requeue import requeued_run
from crossmodal_cli.data.collate import collate_targets
from crossmodal_cli.tasks.base import Task
from crossmodal_cli.version import version_line

log = logging.getLogger(__name__)


def resume_checkpoint(resume: str) -> Path:
    """RUN_DIR -> RUN_DIR/checkpoints/last.ckpt; a .ckpt path as it is."""
    path = Path(resume).expanduser()
    return path if path.suffix == ".ckpt" else path / "checkpoints" / "last.ckpt"


def _run_dir_of(resume: str | None, default: str) -> str:
    return default if resume is None else str(resume_checkpoint(resume).resolve().parent.parent)


OmegaConf.register_new_resolver("cm_run_dir", _run_dir_of, replace=True)
def _hydra_subdir(resume: str | None, stamp: str, *, _root_: DictConfig) -> str:
    """.hydra for a new run folder; .hydra/resume-STAMP (or rerun-STAMP) where one exists, so the original
    record of the run is never overwritten. The folder is the job's own one in a sweep (cmtrain -m)."""
    hydra_cfg = _root_.hydra
    if hydra_cfg.get("mode") == RunMode.MULTIRUN:
        job_dir = Path(hydra_cfg.sweep.dir) / str(hydra_cfg.sweep.subdir)
    else:
        job_dir = Path(hydra_cfg.run.dir)
    if not (job_dir / ".hydra" / "config.yaml").exists():
        return ".hydra"
    return f".hydra/{'resume' if resume is not None else 'rerun'}-{stamp}"


OmegaConf.register_new_resolver("cm_hydra_subdir", _hydra_subdir, replace=True)


def check_config(cfg: DictConfig, *, partial: bool = False) -> None:
    """Every value of a composed cmtrain config, checked before any data is read (one line per mistake, exit 2).

    Types and ranges come from the schemas in `config/schema.py`; then the model's parts are built once on the
    meta device (values only a constructor can judge), `trainer.monitor` is checked against the task's metrics and
    the device and precision are resolved. `modalities=image` (no brackets) is taken as `[image]`.
    """
    validate_train(cfg, partial=partial)
    distributed.local_batch(cfg.trainer.batch_size)  # under torchrun: the global batch must divide evenly
    if isinstance(cfg.modalities, str):
        cfg.modalities = [cfg.modalities]
    task = check_buildable(cfg, list(cfg.modalities) if cfg.modalities else list(MODALITIES))
    task.modalities(list(cfg.modalities) if cfg.modalities else None)
    task.check(cfg)
    resolve_monitor(cfg.trainer, task)
    if cfg.distill.teacher:
        check_teacher(task, cfg.distill.teacher)
    resolve_precision(cfg.trainer.precision, resolve_device(cfg.trainer.device))
    if cfg.modalities:
        check_feature_cache(cfg, cfg.modalities)


def resolve_monitor(trainer: DictConfig, task) -> None:
    """trainer.monitor null = the task's own metric (val/accuracy for classification, val/mae for regression, ...);
    trainer.monitor_mode null = max or min as that metric needs; a mode that contradicts the metric would make
    best.ckpt the worst epoch and is refused. Sets both, in place, to the values used."""
    allowed = ["val/loss", *[f"val/{m}" for m in task.metric_names()]]
    monitor = trainer.monitor if trainer.monitor is not None else f"val/{task.monitor}"
    if monitor not in allowed:
        raise CrossmodalError(f"trainer.monitor={monitor}: use one of {', '.join(allowed)} (or null: the task's "
                              f"val/{task.monitor})")
    best = "max" if task.higher_is_better(monitor[len("val/"):]) else "min"
    if trainer.monitor_mode is not None and trainer.monitor_mode != best:
        raise CrossmodalError(f"trainer.monitor_mode={trainer.monitor_mode}: with trainer.monitor={monitor} best.ckpt "
                              f"would be the worst epoch; use trainer.monitor_mode={best} (or null)")
    trainer.monitor, trainer.monitor_mode = monitor, best


def check_feature_cache(cfg: DictConfig, modalities: list[str]) -> None:
    """trainer.feature_cache=true needs every encoder in use frozen for the whole run."""
    if not cfg.trainer.feature_cache:
        return
    for m in modalities:
        encoder = cfg.encoder[m]
        if not encoder.get("freeze") or encoder.get("unfreeze_at_epoch") is not None:
            raise CrossmodalError(f"trainer.feature_cache=true: encoder.{m} must stay frozen for the whole run "
                                  f"(set encoder.{m}.freeze=true and encoder.{m}.unfreeze_at_epoch=null), or leave "
                                  f"{m} out with modalities=[...]")


def _settings(trainer: DictConfig, device: torch.device, precision: str) -> TrainSettings:
    """The trainer values (checked by check_config) as plain settings."""
    return TrainSettings(max_epochs=trainer.max_epochs, batch_size=trainer.batch_size,
                         accumulate_grad_batches=trainer.accumulate_grad_batches, grad_clip=trainer.grad_clip,
                         precision=precision, device=device, monitor=trainer.monitor,
                         monitor_mode=trainer.monitor_mode, early_stopping_patience=trainer.early_stopping_patience,
                         log_every_n_steps=trainer.log_every_n_steps,
                         checkpoint_every_n_steps=trainer.checkpoint_every_n_steps,
                         max_bad_steps=trainer.max_bad_steps,
                         progress_bar=trainer.progress_bar and distributed.is_main())


def resumed_config(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, dict]:
    """The config stored in the checkpoint to resume, with the command line's trainer.* overrides applied."""
    path = resume_checkpoint(cfg.resume)
    state = load_checkpoint(path)
    if "progress" not in state:
        raise CrossmodalError(f"{path}: this checkpoint has no training state to resume from")
    stored = upgrade(OmegaConf.create(state["config"]))
    changes = [o for o in overrides if not o.startswith(("resume=", "hydra."))]
    other = [o for o in changes if not o.lstrip("+~").startswith("trainer.")]
    if other:
        raise CrossmodalError(f"resume: only trainer.* settings can change when resuming (got {', '.join(other)}); "
                              f"start a new run to change the model or the data")
    before = OmegaConf.to_container(stored.trainer)
    for override in OverridesParser.create().parse_overrides(changes):
        OmegaConf.update(stored, override.key_or_group, override.value(), merge=False)
    _check_epoch_position(path, state["progress"], before, stored.trainer)
    stored.resume = str(path.resolve())
    log.info("resuming %s at epoch %d, step %d%s", path, state["progress"]["epoch"], state["progress"]["step"],
             f" with {', '.join(changes)}" if changes else "")
    return stored, state


def _check_epoch_position(path: Path, progress: dict, before: dict, after: DictConfig) -> None:
    """Mid-epoch, the position in the epoch is counted in batches: a different batch size (or accumulation, or
    drop_last) would skip or repeat rows, so such changes wait for a checkpoint written at an epoch end."""
    if not progress["batch"]:
        return
    for key in ("batch_size", "accumulate_grad_batches", "drop_last"):
        if after.get(key) != before.get(key):
            raise CrossmodalError(
                f"trainer.{key}={after.get(key)}: {path.name} stopped inside epoch {progress['epoch']} (after "
                f"{progress['batch']} batches of trainer.batch_size={before.get('batch_size')}), so trainer.{key} "
                f"must stay {before.get(key)} until the epoch ends; resume without it, or from a checkpoint written "
                f"at an epoch end (epoch-NNN.ckpt with trainer.keep_last_k > 0)")


def train(cfg: DictConfig, run_dir: str | Path, resume: dict | None = None) -> dict:
    """Train the configured model into run_dir (continuing from `resume`, a loaded checkpoint, if given).

    Returns {"val": {...}, "test": {...} or None, "monitor": "val/NAME", "best_epoch": n, ...} for the best
    checkpoint (what metrics.json holds).

    Under torchrun every process runs this (engine/distributed.py): rank 0 reads the data first (generating the
    demo data, writing the validation cache) and builds the tokenizer, which it hands to the others; it alone
    writes into run_dir. Every process trains on its shard and evaluates its shard of val and test (metrics synced).
    """
    run_dir = Path(run_dir)
    if resume is None and (run_dir / "checkpoints" / "last.ckpt").exists():
        raise CrossmodalError(f"{run_dir} already holds a run (checkpoints/last.ckpt): continue it with "
                              f"resume={run_dir}, or choose another hydra.run.dir (hydra.sweep.dir for cmtrain -m)")
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    check_config(cfg, partial=resume is not None)
    log.info("run folder: %s", run_dir.resolve())
    absolute_data_paths(cfg.data)
    seed_everything(cfg.seed)
    if cfg.trainer.deterministic:  # on CUDA also cuBLAS's fixed workspace and cuDNN's deterministic algorithms
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = distributed.device(resolve_device(cfg.trainer.device))
    precision = resolve_precision(cfg.trainer.precision, device)
    task = build_task(cfg, task_state(resume) if resume else None)
    modalities = task.modalities(list(cfg.modalities) if cfg.modalities is not None else None)
    with distributed.rank_zero_first():
        table = load_data(cfg.data, modalities, cfg.seed, task)
    cfg.modalities = table.modalities  # stored resolved, so cmeval rebuilds exactly these encoders
    check_feature_cache(cfg, table.modalities)

    tokenizer = None
    if "text" in table.modalities:
        if resume:
            tokenizer = tokenizer_from_json(resume["tokenizer"])
        elif distributed.is_distributed():  # rank 0's, so every process has the same vocabulary
            built = build_tokenizer(cfg, table.splits["train"]["text"].tolist()) if distributed.is_main() else None
            tokenizer = tokenizer_from_json(distributed.broadcast(tokenizer_to_json(built) if built else None))
        else:
            tokenizer = build_tokenizer(cfg, table.splits["train"]["text"].tolist())
    if distributed.is_main():
        if tokenizer is not None:
            tokenizer.save_pretrained(run_dir / "tokenizer")
        write_json(run_dir / "labels.json", task.state())
        write_json(run_dir / "data_report.json", {"rows": {s: len(f) for s, f in table.splits.items()},
                                                  "unusable_inputs": table.report, "on_missing": cfg.data.on_missing})

    model = build_model(cfg, table.modalities, task, tokenizer,
                        architectures=resume.get("encoders") if resume else None)
    model.to(device)
    speed_settings(model, cfg.trainer, device, precision)
    if distributed.world_size() > 1:  # same initial weights (DDP broadcasts rank 0's); each rank its own dropout
        torch.manual_seed(cfg.seed + 1_000_003 * distributed.rank())
    settings = _settings(cfg.trainer, device, precision)
    # DDP registers parameters when built: encoders that unfreeze later must be registered while still frozen
    settings.find_unused_parameters = any(t.freeze and t.unfreeze_at_epoch is not None
                                          for t in model.transfer.values())
    workers = resolve_workers(cfg.trainer.num_workers)
    if cfg.distill.teacher:
        task = attach_teacher(cfg, table, device, precision, workers)
    loaders = make_loaders(cfg, table, model, tokenizer, device=device, precision=precision, num_workers=workers)
    optimizer = build_optimizer(cfg, model)
    steps_per_epoch = -(-len(loaders["train"]) // settings.accumulate_grad_batches)
    scheduler = hydra.utils.instantiate(cfg.scheduler)(optimizer, steps_per_epoch=steps_per_epoch,
                                                       max_epochs=settings.max_epochs)
    counts = model.parameter_counts()
    log.info("model: %s fusion, %.2fM parameters (fusion %.2fM); device %s, precision %s, %d workers",
             cfg.fusion._target_.rsplit(".", 1)[-1], counts["total"] / 1e6, counts["fusion"] / 1e6, device,
             precision, workers)
    if distributed.is_distributed():
        log.info("torchrun: %d processes (backend %s); global batch %d = %d per process", distributed.world_size(),
                 distributed.backend(), cfg.trainer.batch_size, distributed.local_batch(cfg.trainer.batch_size))

    extra = {"config": to_yaml(cfg), "task": task.state(), "classes": table.classes, "modalities": table.modalities,
             "tokenizer": tokenizer_to_json(tokenizer) if tokenizer is not None else None,
             "encoders": architectures_of(model)}
    reporter = distributed.Silent()  # rank 0 alone writes metrics.jsonl, TensorBoard, curves.png
    if distributed.is_main():
        reporter = RunReporter(run_dir, resume_epoch=resume["progress"]["epoch"] if resume else None,
                               resume_step=resume["progress"]["step"] if resume else None,
                               monitor=cfg.trainer.monitor, monitor_mode=cfg.trainer.monitor_mode, chance=task.chance())
    trainer = Trainer(model, task, loaders["train"], loaders["val"], optimizer, scheduler, settings, reporter,
                      Checkpointer(run_dir / "checkpoints", cfg.trainer.keep_last_k, extra))
    if resume:
        trainer.load_state(resume)
        restore_rng(distributed.rank_rng(resume))
    try:
        progress = trainer.fit()
        results = final_metrics(run_dir, model, task, loaders["val"], loaders["test"], device, precision, progress,
                                cfg.trainer.monitor)
        reporter.final(results, run_hparams(cfg), progress.step)
    finally:
        reporter.close()
    best = results["val"].get(cfg.trainer.monitor.split("/", 1)[1])
    log.info("done: run folder %s; best checkpoint %s (epoch %d, %s %s)", run_dir.resolve(),
             (run_dir / "checkpoints" / "best.ckpt").resolve(), progress.best_epoch, cfg.trainer.monitor,
             f"{best:.4f}" if isinstance(best, float) else best)
    return results


def final_metrics(run_dir: Path, model, task, val_loader, test_loader, device, precision: str, progress,
                  monitor: str) -> dict:
    """Evaluate best.ckpt on val and test with the task's full metrics; write metrics.json and log a table.

    Under torchrun every process loads best.ckpt (written by rank 0 before the Checkpointer's barrier) and evaluates
    its shard, with the metrics synced over ranks; rank 0 writes metrics.json."""
    best_path = run_dir / "checkpoints" / "best.ckpt"
    best = load_checkpoint(best_path)
    model.load_state_dict(best["model"])
    tune_task(task, model, val_loader, device, precision, best_path, best, run_dir)
    results = {"val": evaluate(model, val_loader, task, device, precision, full=True)[0], "test": None}
    if test_loader is not None:
        results["test"] = evaluate(model, test_loader, task, device, precision, full=True)[0]
    results["monitor"] = monitor
    results["best_epoch"] = progress.best_epoch
    results["skipped_steps"] = progress.skipped_steps
    results["parameters"] = model.parameter_counts()
    if hasattr(model.fusion, "summary"):  # learned modality weights and similar, for the report
        results["fusion"] = model.fusion.summary()
        log.info("fusion: %s", ", ".join(f"{k} {v:.3f}" for k, v in results["fusion"].items()))
    if distributed.is_main():
        write_json(run_dir / "metrics.json", results)
    log.info("best checkpoint (epoch %d of %d): %s\n%s", progress.best_epoch, progress.epoch - 1,
             run_dir / "checkpoints" / "best.ckpt", metrics_table({"val": results["val"], "test": results["test"]}))
    return results


def tune_task(task, model, val_loader, device, precision: str, best_path: Path, best: dict, run_dir: Path) -> None:
    """Let the task tune its decoding on the validation split's outputs of the best model (multi-label: the
    threshold); when that changes its state, best.ckpt (rewritten atomically) and labels.json store the new one."""
    if type(task).tune is Task.tune:
        return
    outputs = evaluate(model, val_loader, task, device, precision, keep_outputs=True)[1]
    targets = collate_targets(list(val_loader.dataset.targets[outputs.indices.numpy()]))
    if task.tune(outputs.values, targets):  # every rank tunes alike on the gathered outputs; rank 0 writes
        log.info("tuned on the validation split: %s", task.describe())
        if distributed.is_main():
            save_checkpoint({**best, "task": task.state()}, best_path)
            write_json(run_dir / "labels.json", task.state())


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
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    state = None
    try:
        if cfg.resume:
            cfg, state = resumed_config(cfg, list(hydra_cfg.overrides.task))
        elif requeued_run(run_dir, hydra_cfg):  # the same SLURM/submitit job again, after a pre-emption
            cfg.resume = str(run_dir)
            cfg, state = resumed_config(cfg, [])
        results = train(cfg, run_dir, resume=state)
    except TrainingInterrupted as stop:
        hand_over(stop.signum)  # under submitit: requeue the job (and exit) now that last.ckpt is saved
        if distributed.is_main():
            print(f"stopped by {stop}: last.ckpt saved; continue with: cmtrain resume={run_dir}",
                  file=sys.stderr, flush=True)
        sys.exit(128 + stop.signum)
    except (CrossmodalError, KeyboardInterrupt) as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:  # into the job's log, where cmsweep finds it
            log.error("%s", err)
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


def _now(pattern: str) -> str:
    """${cm_now:PATTERN} in configs/train.yaml: the start time as Hydra's ${now:} gives it, but rank 0's under
    torchrun, so every process resolves the same run folder."""
    return distributed.start_time().strftime(pattern)


OmegaConf.register_new_resolver("cm_now", _now, use_cache=True, replace=True)


def main() -> None:
    """Console script `cmtrain`, also under torchrun (`torchrun --nproc_per_node=N -m crossmodal_cli.train …`).

    Under torchrun the process group is joined before Hydra composes the config, so every process resolves the
    same run folder (rank 0's start time) and ranks other than 0 are told to write nothing into it (no .hydra/,
    no log file: engine/distributed.py); alone, this only calls the Hydra entry point. `cmtrain --version` prints
    the versions of crossmodal, Python, torch (CUDA, GPUs), transformers and Hydra instead."""
    if sys.argv[1:] == ["--version"]:
        print(version_line())
        return
    exit_on_user_error(distributed.setup)()
    try:
        sys.argv += exit_on_user_error(distributed.hydra_overrides)(sys.argv[1:])
        run()
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
