"""Every start-up check of cmtrain, cmeval and cmpredict in one place: a composed config is checked against its
settings (`schema.py`), turned into the typed settings the rest of the code reads, and checked once more where
only the model's parts can judge a value (built on the meta device), all before any data is read: one line per
mistake, exit status 2.

The value checks import no torch, so a typo in a config value is answered at once; torch is imported for the
checks that build something.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from crossmodal_cli.config.schema import validate_eval, validate_predict, validate_train
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.settings import from_values
from crossmodal_cli.settings.commands import EvalSettings, PredictSettings
from crossmodal_cli.settings.run import RunSettings, TrainerSettings

MODALITIES = ("image", "text", "audio")


def run_settings(cfg: DictConfig, *, partial: bool = False) -> RunSettings:
    """A composed cmtrain config, checked value by value (no torch), as settings. `modalities=image` (no
    brackets) is taken as `[image]`. `partial` (a stored config being resumed): keys that did not exist when it
    was written may be absent."""
    values = validate_train(cfg, partial=partial)
    if isinstance(values.get("modalities"), str):
        values["modalities"] = [values["modalities"]]
    return from_values(RunSettings, values)


def check_new_run(run_dir: Path) -> None:
    """A new run never trains into a folder that holds one (its last.ckpt): continuing it is `resume=`."""
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        raise CrossmodalError(f"{run_dir} already holds a run (checkpoints/last.ckpt): continue it with "
                              f"resume={run_dir}, or choose another hydra.run.dir (hydra.sweep.dir for cmtrain -m)")


def check_train(cfg: DictConfig, *, partial: bool = False) -> RunSettings:
    """Every value of a composed cmtrain config (Hydra's callback runs it before the run folder is made; `train`
    again). Returns the settings with trainer.monitor / monitor_mode resolved."""
    return check_run(run_settings(cfg, partial=partial))


def check_run(settings: RunSettings) -> RunSettings:
    """The checks that build something: the model's parts once on the meta device (values only a constructor can
    judge), trainer.monitor against the task's metrics, the teacher of a distillation, the device and precision,
    the feature cache's frozen encoders, the global batch under torchrun."""
    from crossmodal_cli.distill import check_teacher
    from crossmodal_cli.engine import distributed
    from crossmodal_cli.engine.runtime import resolve_device, resolve_precision
    from crossmodal_cli.factory import check_buildable
    from crossmodal_cli.pipeline.loaders import check_feature_cache

    distributed.local_batch(settings.trainer.batch_size)  # under torchrun: the global batch must divide evenly
    requested = list(settings.modalities) if settings.modalities else None
    task = check_buildable(settings, built_modalities(settings, requested))
    task.modalities(requested)
    task.check(settings)
    settings = dataclasses.replace(settings, trainer=resolve_monitor(settings.trainer, task))
    if settings.distill.teacher:
        check_teacher(task, settings.distill.teacher)
    resolve_precision(settings.trainer.precision, resolve_device(settings.trainer.device))
    if requested:
        check_feature_cache(settings, requested)
    return settings


def built_modalities(settings: RunSettings, requested: list[str] | None) -> list[str]:
    """The modalities whose encoders the start-up check builds: those requested, else every one that could have
    a column (tabular when data.columns.tabular names some); with data.tabular.as_text the text encoder reads
    the tabular columns, so text stands in for tabular."""
    if "tabular" in (requested or []) and not settings.data.columns.tabular:
        raise CrossmodalError("modalities includes tabular, but data.columns.tabular names no column; list the "
                              "columns of numbers and categories, e.g. data.columns.tabular=[price,brand]")
    wanted = requested or [*MODALITIES, *(["tabular"] if settings.data.columns.tabular else [])]
    if settings.data.tabular.as_text and "tabular" in wanted:
        wanted = [m for m in MODALITIES if m in wanted or m == "text"]
    return wanted


def resolve_monitor(trainer: TrainerSettings, task: Any) -> TrainerSettings:
    """trainer.monitor null = the task's own metric (val/accuracy for classification, val/mae for regression, ...);
    trainer.monitor_mode null = max or min as that metric needs; a mode that contradicts the metric would make
    best.ckpt the worst epoch and is refused. Returns the trainer settings with both set to the values used."""
    allowed = ["val/loss", *[f"val/{m}" for m in task.metric_names()]]
    monitor = trainer.monitor if trainer.monitor is not None else f"val/{task.monitor}"
    if monitor not in allowed:
        raise CrossmodalError(f"trainer.monitor={monitor}: use one of {', '.join(allowed)} (or null: the task's "
                              f"val/{task.monitor})")
    best = "max" if task.higher_is_better(monitor[len("val/"):]) else "min"
    if trainer.monitor_mode is not None and trainer.monitor_mode != best:
        raise CrossmodalError(f"trainer.monitor_mode={trainer.monitor_mode}: with trainer.monitor={monitor} best.ckpt "
                              f"would be the worst epoch; use trainer.monitor_mode={best} (or null)")
    return dataclasses.replace(trainer, monitor=monitor, monitor_mode=best)


def _device_and_precision(device: str, precision: str) -> None:
    from crossmodal_cli.engine.runtime import resolve_device, resolve_precision

    resolve_precision(precision, resolve_device(device))


def check_eval(cfg: DictConfig) -> EvalSettings:
    """Every value of a composed cmeval config, checked before anything is read."""
    settings = from_values(EvalSettings, validate_eval(cfg))
    if not Path(settings.ckpt).expanduser().is_file():
        raise CrossmodalError(f"ckpt={settings.ckpt}: checkpoint not found (expected e.g. "
                              f"outputs/DATE/TIME/checkpoints/best.ckpt)")
    _device_and_precision(settings.trainer.device, settings.trainer.precision)
    return settings


def check_predict(cfg: DictConfig) -> PredictSettings:
    """Every value of a composed cmpredict config, checked before anything is read."""
    settings = from_values(PredictSettings, validate_predict(cfg))
    for key, path in (("ckpt", settings.ckpt), ("data.csv", settings.data.csv)):
        if not Path(path).expanduser().is_file():
            raise CrossmodalError(f"{key}={path}: file not found")
    if settings.data.root and not Path(settings.data.root).expanduser().is_dir():
        raise CrossmodalError(f"data.root={settings.data.root}: no such folder")
    _device_and_precision(settings.trainer.device, settings.trainer.precision)
    return settings
