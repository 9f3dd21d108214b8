"""Learning-rate schedules built from torch.optim.lr_scheduler, stepped once per optimizer step.

Each builder is configured by a `configs/scheduler/*.yaml` with `_partial_: true`; the loop supplies
`optimizer`, `steps_per_epoch` and `max_epochs` at run time. Durations in the configs are in epochs (may be
fractional) and converted to optimizer steps here.
"""
from __future__ import annotations

import logging

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, OneCycleLR, SequentialLR,
                                      StepLR)

from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)


MAX_WARMUP_SHARE = 0.2  # warm-up never takes more than this share of the run


def _warmup_steps(warmup_epochs: float, steps_per_epoch: int, total: int) -> int:
    """Warm-up in optimizer steps, clipped to MAX_WARMUP_SHARE of the run (logged), so a short run (e.g.
    trainer.max_epochs=1 with warmup_epochs=1) still reaches the configured learning rate and decays."""
    if warmup_epochs < 0:
        raise CrossmodalError(f"scheduler.warmup_epochs={warmup_epochs} must be >= 0")
    steps = int(round(warmup_epochs * steps_per_epoch))
    limit = int(total * MAX_WARMUP_SHARE)
    if steps > limit:
        log.info("scheduler.warmup_epochs=%s is %.0f%% of this %d-step run: warm-up clipped to %d steps (%.0f%%)",
                 warmup_epochs, 100 * steps / max(total, 1), total, limit, 100 * MAX_WARMUP_SHARE)
        return limit
    return steps


def _with_warmup(optimizer: Optimizer, warmup: int, after: LRScheduler) -> LRScheduler:
    """Linear warm-up from ~0 to the base learning rate over `warmup` steps, then `after`."""
    if warmup == 0:
        return after
    ramp = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, after], milestones=[warmup])


def cosine(optimizer: Optimizer, *, steps_per_epoch: int, max_epochs: int, warmup_epochs: float,
           min_lr_ratio: float) -> LRScheduler:
    total = steps_per_epoch * max_epochs
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, total)
    decay = GroupCosine(optimizer, T_max=max(total - warmup, 1), min_lr_ratio=min_lr_ratio)
    return _with_warmup(optimizer, warmup, decay)


class GroupCosine(CosineAnnealingLR):
    """torch's CosineAnnealingLR with a floor per parameter group (min_lr_ratio x that group's initial lr): torch
    takes one eta_min for every group, which would lift groups with a small learning rate (a frozen-then-unfrozen
    encoder, layer-wise decay) to another group's floor. Each group's value is torch's own formula with that
    group's floor, so a single-rate optimizer gets exactly torch's schedule."""

    def __init__(self, optimizer: Optimizer, T_max: int, min_lr_ratio: float):
        self.floors = [group.get("initial_lr", group["lr"]) * min_lr_ratio for group in optimizer.param_groups]
        super().__init__(optimizer, T_max=T_max, eta_min=self.floors[0])

    def get_lr(self) -> list[float]:
        values = []
        for i, floor in enumerate(self.floors):
            self.eta_min = floor
            values.append(super().get_lr()[i])
        self.eta_min = self.floors[0]
        return values


def onecycle(optimizer: Optimizer, *, steps_per_epoch: int, max_epochs: int, warmup_epochs: float,
             max_lr_ratio: float) -> LRScheduler:
    total = max(steps_per_epoch * max_epochs, 2)
    warmup = max(_warmup_steps(warmup_epochs, steps_per_epoch, total), 1)
    return OneCycleLR(optimizer, max_lr=[g["lr"] * max_lr_ratio for g in optimizer.param_groups],
                      total_steps=total, pct_start=warmup / total, anneal_strategy="cos")


def step(optimizer: Optimizer, *, steps_per_epoch: int, max_epochs: int, warmup_epochs: float, step_epochs: float,
         gamma: float) -> LRScheduler:
    total = steps_per_epoch * max_epochs
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, total)
    decay = StepLR(optimizer, step_size=max(int(round(step_epochs * steps_per_epoch)), 1), gamma=gamma)
    return _with_warmup(optimizer, warmup, decay)


def constant(optimizer: Optimizer, *, steps_per_epoch: int, max_epochs: int, warmup_epochs: float) -> LRScheduler:
    total = steps_per_epoch * max_epochs
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch, total)
    return _with_warmup(optimizer, warmup, ConstantLR(optimizer, factor=1.0, total_iters=0))
