"""A step whose loss is not finite (NaN or inf) is skipped and counted; too many in a row stop the run.

Two ways to find out, one object:
* **on the host** (the default): one host sync per optimizer step reads whether the loss is finite. Under torchrun
  one all-reduce (max) of [non-finite here, stop signal received here] instead, so every process skips the same
  steps and agrees on when to stop.
* **on the device** (one process, a fused AdamW/Adam/SGD, no fp16 loss scaling): the fused kernel skips the step
  itself when handed `found_inf` (as GradScaler does for fp16), so no step waits for the device; the counters stay
  on the device and are read at log points (`read`).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch

from crossmodal_cli.engine import distributed

log = logging.getLogger(__name__)


class NonFinite:
    """Guards the optimizer steps of one run. `progress` is the loop's Progress (bad_steps, skipped_steps)."""

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, device: torch.device):
        self.optimizer, self.device = optimizer, device
        self.on_device = (not distributed.is_distributed() and not scaler.is_enabled()
                          and bool(getattr(optimizer, "_step_supports_amp_scaling", False)))
        self.counters: dict[str, torch.Tensor] = {}  # "run" (consecutive), "worst" (longest run), "total" since read
        self.bad = torch.zeros((), device=device)     # the current step's found_inf (on the device)
        self.stopping: int | None = None  # the stop request every process agreed on (torchrun)

    def check(self, loss: torch.Tensor, progress, stop_requested: int | None) -> bool:
        """Whether to take the step for this accumulated loss. On the host: False for a non-finite loss, counted
        in `progress`. On the device: always True (the fused kernel skips it), counted on the device."""
        if self.on_device:
            bad = (~torch.isfinite(loss)).to(torch.int64)
            zero = torch.zeros_like(bad)
            run = (self.counters.get("run", zero) + 1) * bad
            self.counters = {"run": run, "worst": torch.maximum(self.counters.get("worst", zero), run),
                             "total": self.counters.get("total", zero) + bad}
            self.bad = bad.to(torch.float32)
            return True
        if distributed.is_distributed():
            flags = [int(not torch.isfinite(loss)), stop_requested or 0]
            bad, signum = distributed.agree(flags, self.device)
            self.stopping = self.stopping or signum or None
        else:
            bad = not bool(torch.isfinite(loss))
        if not bad:
            progress.bad_steps = 0
            return True
        progress.bad_steps += 1
        progress.skipped_steps += 1
        log.warning("non-finite loss at step %d (epoch %d): step skipped (%d in a row, %d in all)",
                    progress.step + 1, progress.epoch, progress.bad_steps, progress.skipped_steps)
        return False

    @contextlib.contextmanager
    def stepping(self) -> Iterator[None]:
        """Around the optimizer's step: on the device, the fused kernel is handed this step's found_inf."""
        if not self.on_device:
            yield
            return
        self.optimizer.grad_scale, self.optimizer.found_inf = None, self.bad
        try:
            yield
        finally:
            del self.optimizer.grad_scale, self.optimizer.found_inf

    def read(self, progress) -> int:
        """Bring the device's counters into `progress` (log points, epoch end); returns the longest run of
        consecutive non-finite steps since the last read (the host path counts it in progress.bad_steps)."""
        if not self.counters:
            return 0
        run, worst, total = torch.stack([self.counters["run"], self.counters["worst"],
                                         self.counters["total"]]).tolist()
        self.counters = {"run": self.counters["run"], "worst": self.counters["run"],
                         "total": torch.zeros_like(self.counters["run"])}
        progress.bad_steps = run
        if total:
            progress.skipped_steps += total
            log.warning("non-finite loss: %d step(s) skipped before step %d (epoch %d; %d in all)", total,
                        progress.step, progress.epoch, progress.skipped_steps)
        return worst
