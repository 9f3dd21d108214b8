"""fit() and evaluate(): the training step, AMP, accumulation, clipping, schedule, validation, early stop.

The loop moves a batch dict to the device and calls the model; it knows nothing about modalities.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from crossmodal_cli.engine.checkpoint import save_checkpoint
from crossmodal_cli.engine.reporting import RunReporter

log = logging.getLogger(__name__)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainSettings:
    """Plain values from `configs/trainer/*.yaml`, with device and precision already resolved."""

    max_epochs: int
    accumulate_grad_batches: int
    grad_clip: float | None
    precision: str
    device: torch.device
    monitor: str
    monitor_mode: str
    early_stopping_patience: int | None
    log_every_n_steps: int
    progress_bar: bool


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors (nested in dicts) to `device`, asynchronously from pinned memory."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast for bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def compute_loss(task, out, target: torch.Tensor) -> torch.Tensor:
    """The task loss of the fused prediction plus aux_weight x the mean loss of any unimodal predictions."""
    loss = task.loss(out.logits, target)
    if out.aux_logits and out.aux_weight:
        aux = torch.stack([task.loss(logits, target) for logits in out.aux_logits.values()]).mean()
        loss = loss + out.aux_weight * aux
    return loss


@dataclass
class Outputs:
    """Per-row results of one pass: probabilities [N, C], targets [N], row indices [N] (CPU tensors)."""

    probabilities: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor


@torch.no_grad()
def evaluate(model: nn.Module, loader, task, device: torch.device, precision: str,
             keep_outputs: bool = False, desc: str = "eval", progress_bar: bool = False) -> tuple[dict, Outputs | None]:
    """Loss and task metrics over a loader (and, with keep_outputs, every row's probabilities)."""
    model.eval()
    metrics = task.metrics().to(device)
    loss_sum = torch.zeros((), device=device)
    count, kept = 0, []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress_bar or None):
        batch = to_device(batch, device)
        with autocast(device, precision):
            logits = model(batch["inputs"], batch.get("present")).logits
        target = batch["target"]
        loss_sum += task.loss(logits, target) * target.numel()
        count += target.numel()
        probs = task.probabilities(logits)
        metrics.update(probs, target)
        if keep_outputs:
            kept.append((probs.cpu(), target.cpu(), batch["index"].cpu()))
    results = {k: float(v) for k, v in metrics.compute().items()}
    results["loss"] = float(loss_sum) / max(count, 1)
    outputs = Outputs(*(torch.cat(parts) for parts in zip(*kept))) if keep_outputs and kept else None
    return results, outputs


def rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) RNG states as plain values a safe checkpoint can hold."""
    import random

    np_state = np.random.get_state()
    return {"python": repr(random.getstate()), "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)),
                                                         "pos": int(np_state[2])},
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


def fit(model: nn.Module, task, train_loader, val_loader, optimizer: torch.optim.Optimizer, scheduler,
        settings: TrainSettings, reporter: RunReporter, checkpoint_dir: str | Path,
        checkpoint_extra: Callable[[], dict]) -> dict:
    """Train for settings.max_epochs (or until early stop); write last.ckpt every epoch and best.ckpt on improvement.

    Returns {"best_epoch", "best": monitored value, "epochs": epochs run}.
    """
    s, device = settings, settings.device
    scaler = torch.amp.GradScaler(device.type, enabled=s.precision == "fp16")
    checkpoint_dir = Path(checkpoint_dir)
    best, best_epoch, stale, step = None, 0, 0, 0
    accum = s.accumulate_grad_batches
    for epoch in range(1, s.max_epochs + 1):
        model.train()
        started, seen = time.perf_counter(), 0
        loss_sum = torch.zeros((), device=device)
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{s.max_epochs}", leave=False,
                   disable=not s.progress_bar or None, dynamic_ncols=True)
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(bar):
            batch = to_device(batch, device)
            with autocast(device, s.precision):
                out = model(batch["inputs"], batch.get("present"))
            loss = compute_loss(task, out, batch["target"])
            group = min(accum, len(train_loader) - (i // accum) * accum)  # the last group may be shorter
            scaler.scale(loss / group).backward()
            loss_sum += loss.detach()
            seen += batch["target"].numel()
            if (i + 1) % accum == 0 or i + 1 == len(train_loader):
                if s.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                if step % s.log_every_n_steps == 0:
                    running = float(loss_sum) / (i + 1)
                    rate = seen / (time.perf_counter() - started)
                    bar.set_postfix(loss=f"{running:.4f}", samples_s=f"{rate:.0f}")
                    reporter.scalars({"train/loss_running": running, "train/lr": scheduler.get_last_lr()[0]}, step)
        bar.close()
        train_seconds = time.perf_counter() - started
        val, _ = evaluate(model, val_loader, task, device, s.precision, progress_bar=s.progress_bar)
        record = {"epoch": epoch, "step": step, "train/loss": float(loss_sum) / max(len(train_loader), 1),
                  **{f"val/{k}": v for k, v in val.items()}, "lr": scheduler.get_last_lr()[0],
                  "seconds": time.perf_counter() - started, "samples_per_second": seen / train_seconds}
        reporter.epoch(record)
        current = record[s.monitor]
        is_best = _improved(current, best, s.monitor_mode)
        if is_best:
            best, best_epoch, stale = current, epoch, 0
        else:
            stale += 1
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch, "step": step,
                 "best": best, "best_epoch": best_epoch, "val_metrics": val, "rng": rng_state(),
                 **checkpoint_extra()}
        save_checkpoint(state, checkpoint_dir / "last.ckpt")
        if is_best:
            save_checkpoint(state, checkpoint_dir / "best.ckpt")
        if s.early_stopping_patience is not None and stale >= s.early_stopping_patience:
            log.info("early stop: %s has not improved for %d epochs (best %.4f at epoch %d)",
                     s.monitor, stale, best, best_epoch)
            return {"best_epoch": best_epoch, "best": best, "epochs": epoch}
    return {"best_epoch": best_epoch, "best": best, "epochs": s.max_epochs}
