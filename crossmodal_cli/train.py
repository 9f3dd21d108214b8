"""`cmtrain`: build everything from the config, fit, evaluate the best checkpoint on val and test.

`train(cfg, run_dir) -> metrics` is separate from the Hydra wrapper so tests, sweeps and the Optuna sweeper
can call it and get the metrics back.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from crossmodal_cli.build import (absolute_data_paths, build_model, build_optimizer, build_tokenizer, load_data,
                                  make_split_loader, resolve_device, resolve_precision, seed_everything, to_yaml)
from crossmodal_cli.data.dataset import resolve_workers
from crossmodal_cli.data.modalities import tokenizer_to_json
from crossmodal_cli.engine.checkpoint import load_checkpoint
from crossmodal_cli.engine.loop import TrainSettings, evaluate, fit
from crossmodal_cli.engine.reporting import RunReporter, metrics_table, write_json
from crossmodal_cli.errors import CrossmodalError, exit_on_user_error
from crossmodal_cli.paths import config_dir

log = logging.getLogger(__name__)


def _settings(trainer: DictConfig, device: torch.device, precision: str, metric_names: list[str]) -> TrainSettings:
    """Check the trainer values a user can get wrong and return them as plain settings."""
    for key in ("max_epochs", "batch_size", "accumulate_grad_batches", "log_every_n_steps"):
        if not isinstance(trainer[key], int) or trainer[key] < 1:
            raise CrossmodalError(f"trainer.{key}={trainer[key]}: must be a whole number >= 1")
    allowed = ["val/loss", *[f"val/{m}" for m in metric_names]]
    if trainer.monitor not in allowed:
        raise CrossmodalError(f"trainer.monitor={trainer.monitor}: use one of {', '.join(allowed)}")
    if trainer.monitor_mode not in ("max", "min"):
        raise CrossmodalError(f"trainer.monitor_mode={trainer.monitor_mode}: use max or min")
    return TrainSettings(max_epochs=trainer.max_epochs, accumulate_grad_batches=trainer.accumulate_grad_batches,
                         grad_clip=trainer.grad_clip, precision=precision, device=device, monitor=trainer.monitor,
                         monitor_mode=trainer.monitor_mode, early_stopping_patience=trainer.early_stopping_patience,
                         log_every_n_steps=trainer.log_every_n_steps, progress_bar=trainer.progress_bar)


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train the configured model into run_dir; return {"val": {...}, "test": {...} or None} of the best checkpoint."""
    run_dir = Path(run_dir)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    absolute_data_paths(cfg.data)
    seed_everything(cfg.seed)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = resolve_device(cfg.trainer.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    modalities = list(cfg.modalities) if cfg.modalities is not None else None
    table = load_data(cfg.data, modalities, cfg.seed)
    cfg.modalities = table.modalities  # stored resolved, so cmeval rebuilds exactly these encoders

    tokenizer = build_tokenizer(cfg.data, table.splits["train"]["text"].tolist()) if "text" in table.modalities \
        else None
    if tokenizer is not None:
        tokenizer.save_pretrained(run_dir / "tokenizer")
    write_json(run_dir / "labels.json", {"classes": table.classes})
    write_json(run_dir / "data_report.json", {"rows": {s: len(f) for s, f in table.splits.items()},
                                              "unusable_inputs": table.report, "on_missing": cfg.data.on_missing})

    model, task = build_model(cfg, table.modalities, len(table.classes), tokenizer)
    model.to(device)
    settings = _settings(cfg.trainer, device, precision, list(task.metrics().keys()))
    workers = resolve_workers(cfg.trainer.num_workers)
    loader = dict(data=cfg.data, tokenizer=tokenizer, batch_size=cfg.trainer.batch_size, num_workers=workers,
                  seed=cfg.seed, pin_memory=device.type == "cuda")
    train_loader = make_split_loader(table, "train", train=True, **loader)
    val_loader = make_split_loader(table, "val", train=False, **loader)
    optimizer = build_optimizer(cfg, model)
    steps_per_epoch = -(-len(train_loader) // settings.accumulate_grad_batches)
    scheduler = hydra.utils.instantiate(cfg.scheduler)(optimizer, steps_per_epoch=steps_per_epoch,
                                                       max_epochs=settings.max_epochs)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %s fusion, %.2fM parameters; device %s, precision %s, %d workers", cfg.fusion._target_
             .rsplit(".", 1)[-1], n_params / 1e6, device, precision, workers)

    extra = {"config": to_yaml(cfg), "classes": table.classes, "modalities": table.modalities,
             "tokenizer": tokenizer_to_json(tokenizer) if tokenizer is not None else None}
    reporter = RunReporter(run_dir)
    try:
        summary = fit(model, task, train_loader, val_loader, optimizer, scheduler, settings, reporter,
                      run_dir / "checkpoints", lambda: extra)
    finally:
        reporter.close()

    best = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    model.load_state_dict(best["model"])
    results = {"val": evaluate(model, val_loader, task, device, precision)[0], "test": None}
    if len(table.splits["test"]):
        test_loader = make_split_loader(table, "test", train=False, **loader)
        results["test"] = evaluate(model, test_loader, task, device, precision)[0]
    results["best_epoch"] = summary["best_epoch"]
    if hasattr(model.fusion, "summary"):  # learned modality weights and similar, for the report
        results["fusion"] = model.fusion.summary()
    write_json(run_dir / "metrics.json", results)
    log.info("best checkpoint (epoch %d of %d): %s\n%s", summary["best_epoch"], summary["epochs"],
             run_dir / "checkpoints" / "best.ckpt", metrics_table({"val": results["val"], "test": results["test"]}))
    return results


@hydra.main(config_path=config_dir(), config_name="train", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    """Console script `cmtrain`. Returns the monitored value (for Hydra sweepers)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = train(cfg, HydraConfig.get().runtime.output_dir)
    split, name = cfg.trainer.monitor.split("/", 1)
    return (results.get(split) or {}).get(name)


if __name__ == "__main__":
    main()
