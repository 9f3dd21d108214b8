"""One training run from checked settings: data, tokenizer, model, loaders, optimizer, the loop, the final
evaluation of best.ckpt. The body of `cmtrain` and of the Python API's `fit`, below the config layer.

Under torchrun every process runs it (engine/distributed.py): rank 0 reads the data first (generating the demo
data, writing the validation cache) and builds the tokenizer, which it hands to the others; it alone writes into
the run folder. Every process trains on its shard and evaluates its shard of val and test (metrics synced).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
import yaml

from crossmodal_cli.data.collate import collate_targets
from crossmodal_cli.data.dataset import resolve_workers
from crossmodal_cli.data.tabular import TabularPreprocessor
from crossmodal_cli.data.modalities import tokenizer_from_json, tokenizer_to_json
from crossmodal_cli.distill import attach_teacher
from crossmodal_cli.engine import distributed
from crossmodal_cli.engine.checkpoint import Checkpointer, load_checkpoint, restore_rng, save_checkpoint, task_state
from crossmodal_cli.engine.evaluation import evaluate
from crossmodal_cli.engine.loop import Trainer
from crossmodal_cli.engine.reporting import RunReporter, metrics_table, run_hparams, write_json
from crossmodal_cli.engine.runtime import (make_deterministic, resolve_device, resolve_precision, seed_everything,
                                           speed_settings)
from crossmodal_cli.encoders import require_encoder
from crossmodal_cli.factory import (architectures_of, build_model, build_optimizer, build_scheduler, build_task,
                                    encoder_node, encoder_runtime, instantiate_node)
from crossmodal_cli.pipeline.data import absolute_data_paths, load_data
from crossmodal_cli.pipeline.inputs import build_tokenizer, pin_image_input
from crossmodal_cli.pipeline.loaders import check_feature_cache, make_loaders
from crossmodal_cli.settings import to_values
from crossmodal_cli.settings.run import RunSettings
from crossmodal_cli.tasks.base import Task

log = logging.getLogger(__name__)


def run_training(cfg: RunSettings, run_dir: Path, resume: dict | None = None, prune=None) -> dict:
    """Train into run_dir (continuing from `resume`, a loaded checkpoint); returns what metrics.json holds.
    `prune(epoch, value, last) -> bool`: an Optuna search's pruning (engine/loop.Trainer)."""
    log.info("run folder: %s", run_dir.resolve())
    cfg = dataclasses.replace(cfg, data=absolute_data_paths(cfg.data))
    seed_everything(cfg.seed)
    if cfg.trainer.deterministic:
        make_deterministic()
    device = distributed.device(resolve_device(cfg.trainer.device))
    precision = resolve_precision(cfg.trainer.precision, device)
    task = build_task(cfg, task_state(resume) if resume else None)
    modalities = task.modalities(list(cfg.modalities) if cfg.modalities is not None else None)
    fitted = TabularPreprocessor.from_state(resume["tabular"]) if resume and resume.get("tabular") else None
    with distributed.rank_zero_first():
        table = load_data(cfg.data, modalities, cfg.seed, task, tabular=fitted)
    # stored resolved: the modalities read (cmeval reads them again; the checkpoint's "modalities" are the model's,
    # which differ with data.tabular.as_text: tabular read, then written into the text)
    cfg = dataclasses.replace(cfg, modalities=table.read)
    cfg = pin_image_input(cfg)  # an encoder's folder-declared image input, stored so the folder is not needed again
    check_feature_cache(cfg, table.modalities)
    tokenizer = _tokenizer(cfg, table, resume)
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(run_dir / "tokenizer")
        write_json(run_dir / "labels.json", task.state())
        write_json(run_dir / "data_report.json", {"rows": {s: len(f) for s, f in table.splits.items()},
                                                  "unusable_inputs": table.report, "on_missing": cfg.data.on_missing,
                                                  **({"tabular": table.tabular.report()} if table.tabular else {})})

    model = build_model(cfg, table.modalities, task, tokenizer, architectures=resume.get("encoders") if resume else None,
                        tabular=table.tabular)
    model.to(device)
    if not resume and task.initialise(model, TextTower(cfg, model, tokenizer, device)) and distributed.is_main():
        write_json(run_dir / "labels.json", task.state())  # what the pretrained encoders decided
    speed_settings(model, cfg.trainer, device, precision)
    if distributed.world_size() > 1:  # same initial weights (DDP broadcasts rank 0's); each rank its own dropout
        torch.manual_seed(cfg.seed + 1_000_003 * distributed.rank())
    # DDP registers parameters when built: encoders that unfreeze later must be registered while still frozen
    unfreezing = any(t.freeze and t.unfreeze_at_epoch is not None for t in model.transfer.values())
    workers = resolve_workers(cfg.trainer.num_workers)
    if cfg.distill.teacher:
        task = attach_teacher(cfg, table, task, device, precision, workers)
    loaders = make_loaders(cfg, table, model, tokenizer, device=device, precision=precision, num_workers=workers)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, -(-len(loaders["train"]) // cfg.trainer.accumulate_grad_batches))
    _log_model(cfg, model, device, precision, workers)

    extra = {"config": yaml.safe_dump(to_values(cfg), sort_keys=False), "task": task.state(),
             "modalities": table.modalities, "encoders": architectures_of(model),
             "tokenizer": tokenizer_to_json(tokenizer) if tokenizer is not None else None,
             "tabular": table.tabular.state() if table.tabular is not None else None}
    reporter = distributed.Silent()  # rank 0 alone writes metrics.jsonl, TensorBoard, curves.png
    if distributed.is_main():
        reporter = RunReporter(run_dir, resume_epoch=resume["progress"]["epoch"] if resume else None,
                               resume_step=resume["progress"]["step"] if resume else None,
                               monitor=cfg.trainer.monitor, monitor_mode=cfg.trainer.monitor_mode, chance=task.chance())
    trainer = Trainer(model, task, loaders["train"], loaders["val"], optimizer, scheduler, cfg.trainer, reporter,
                      Checkpointer(run_dir / "checkpoints", cfg.trainer.keep_last_k, extra), device=device,
                      precision=precision, find_unused_parameters=unfreezing, prune=prune)
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


def _tokenizer(cfg: RunSettings, table, resume: dict | None):
    """The run's tokenizer (None without text): the checkpoint's when resuming; under torchrun rank 0's, so every
    process has the same vocabulary."""
    if "text" not in table.modalities:
        return None
    if resume:
        return tokenizer_from_json(resume["tokenizer"])
    if distributed.is_distributed():
        built = build_tokenizer(cfg, table.splits["train"]["text"].tolist()) if distributed.is_main() else None
        return tokenizer_from_json(distributed.broadcast(tokenizer_to_json(built) if built else None))
    return build_tokenizer(cfg, table.splits["train"]["text"].tolist())


class TextTower:
    """`Task.initialise`'s `embed_texts`: texts -> unit joint-space embeddings [N, E] by the run's text encoder
    (the model's, else one built from encoder.text with its folder's tokenizer, on first use: zero-shot classifies
    images with a text tower the model does not hold) and its joint projection (encoders/clip.py)."""

    def __init__(self, cfg: RunSettings, model, tokenizer, device: torch.device):
        self.cfg, self.model, self.tokenizer, self.device = cfg, model, tokenizer, device
        self._encoder = model.encoders["text"] if "text" in model.encoders else None

    @property
    def encoder(self):
        if self._encoder is None:
            self.tokenizer = self.tokenizer or build_tokenizer(self.cfg, [])
            node = encoder_node(self.cfg, "text")[0]
            built = instantiate_node(node, "encoder/text", **encoder_runtime(self.cfg, self.tokenizer)["text"])
            self._encoder = require_encoder(built, "encoder/text", node.get("_target_")).to(self.device)
        return self._encoder

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        encoder = self.encoder
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.cfg.data.text.max_length,
                                return_tensors="pt", return_token_type_ids=False)
        training = encoder.training
        encoder.eval()
        pooled = encoder({k: v.to(self.device) for k, v in tokens.items()}).pooled.float()   # [N, D]
        encoder.train(training)
        projection = encoder.joint_space().projection.to(self.device)                      # [E, D]
        return torch.nn.functional.normalize(pooled @ projection.T, dim=-1)


def _log_model(cfg: RunSettings, model, device, precision: str, workers: int) -> None:
    counts = model.parameter_counts()
    log.info("model: %s fusion, %.2fM parameters, %.2fM trainable (fusion %.2fM; %s); device %s, precision %s, "
             "%d workers", cfg.fusion["_target_"].rsplit(".", 1)[-1], counts["total"] / 1e6, counts["trainable"] / 1e6,
             counts["fusion"] / 1e6, ", ".join(f"encoder {m} {c['trainable'] / 1e6:.2f}M of {c['total'] / 1e6:.2f}M "
                                                f"trainable" for m, c in counts["encoders"].items()),
             device, precision, workers)
    if distributed.is_distributed():
        log.info("torchrun: %d processes (backend %s); global batch %d = %d per process", distributed.world_size(),
                 distributed.backend(), cfg.trainer.batch_size, distributed.local_batch(cfg.trainer.batch_size))


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
    if progress.pruned_at:
        results["pruned_at_epoch"] = progress.pruned_at
    results["parameters"] = model.parameter_counts()
    summary = model.fusion.summary() if model.fusion is not None else {}
    if summary:  # learned modality weights and similar, for the report
        results["fusion"] = summary
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
