"""fit() and evaluate(): the training step, AMP, accumulation, clipping, schedule, validation, early stop.

The loop moves a batch dict to the device, calls the model, sums the task's losses and steps; it knows neither
modalities nor the kind of target (the task owns targets, losses and metrics: tasks/base.py). Everything
it needs to continue a run exactly (weights, optimizer, scheduler, scaler, RNG, its own `Progress`) goes into
last.ckpt at every epoch end, every `checkpoint_every_n_steps` optimizer steps and on SIGINT/SIGTERM.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from crossmodal_cli.engine import distributed
from crossmodal_cli.engine.checkpoint import Checkpointer, rng_state
from crossmodal_cli.engine.interrupt import StopSignal, TrainingInterrupted
from crossmodal_cli.engine.reporting import RunReporter
from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainSettings:
    """Plain values from `configs/trainer/*.yaml`, with device and precision already resolved."""

    max_epochs: int
    batch_size: int
    accumulate_grad_batches: int
    grad_clip: float | None
    precision: str
    device: torch.device
    monitor: str
    monitor_mode: str
    early_stopping_patience: int | None
    log_every_n_steps: int
    checkpoint_every_n_steps: int | None
    max_bad_steps: int
    progress_bar: bool
    find_unused_parameters: bool = False  # under torchrun: DDP registers frozen parameters that unfreeze later


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint so a resumed run continues exactly."""

    epoch: int = 1              # the epoch in progress (1-based)
    batch: int = 0              # batches of that epoch already trained
    step: int = 0               # optimizer steps so far
    loss_sum: float = 0.0       # sum of this epoch's batch losses so far
    seen: int = 0               # samples of this epoch so far
    seconds: float = 0.0        # training seconds of this epoch so far
    best: float | None = None   # best monitored value and its epoch
    best_epoch: int = 0
    stale: int = 0              # epochs since the monitored value improved
    bad_steps: int = 0          # consecutive optimizer steps skipped for a non-finite loss
    skipped_steps: int = 0      # all of them


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors (nested in dicts) to `device`, asynchronously from pinned memory."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def device_memory(device: torch.device) -> dict[str, float]:
    """{"gpu/max_memory_allocated_gb", "gpu/memory_reserved_gb"} on CUDA (for TensorBoard); {} elsewhere."""
    if device.type != "cuda":
        return {}
    return {"gpu/max_memory_allocated_gb": torch.cuda.max_memory_allocated(device) / 2**30,
            "gpu/memory_reserved_gb": torch.cuda.memory_reserved(device) / 2**30}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast for bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def total_loss(task, out, target) -> torch.Tensor:
    """The sum of the task's losses (the task decides what they are: the fused prediction's, unimodal branches',
    one per head, ...)."""
    return sum(task.losses(out, target).values())


def concat(parts: list) -> Any:
    """torch.cat of a list of tensors, or of dicts of tensors (one per head) key by key."""
    if isinstance(parts[0], Mapping):
        return {key: concat([p[key] for p in parts]) for key in parts[0]}
    return torch.cat(parts)


@dataclass
class Outputs:
    """Per-row results of one pass: the task's outputs [N, ...] (probabilities, numbers; a dict of them for
    several heads), row indices [N] (CPU)."""

    values: Any
    indices: torch.Tensor


@torch.no_grad()
def evaluate(model: nn.Module, loader, task, device: torch.device, precision: str, keep_outputs: bool = False,
             desc: str = "eval", progress_bar: bool = False, full: bool = False) -> tuple[dict, Outputs | None]:
    """Loss and the task's metrics over a loader (`full`: the task's full set, else its per-epoch set) and, with
    keep_outputs, every row's outputs.

    Under torchrun each process evaluates its shard of the split (without padding: no row twice) and the results
    cover the whole split on every process: torchmetrics syncs its states in compute(), the loss sum and the row
    count are added up over ranks, kept outputs are gathered (in shard order; `indices` says which row each is)."""
    model.eval()
    metrics = task.metrics(full).to(device)
    loss_sum = torch.zeros((), device=device)
    count, kept = 0, []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress_bar or None):
        batch = to_device(batch, device)
        with autocast(device, precision):
            out = model(batch["inputs"], batch.get("present"))
        rows = batch["index"].numel()
        loss_sum += total_loss(task, out, batch["target"]).detach() * rows
        count += rows
        task.update(metrics, out, batch["target"])
        if keep_outputs:
            kept.append((to_device(task.outputs(out), torch.device("cpu")), batch["index"].cpu()))
    results = {k: float(v) for k, v in metrics.compute().items()}
    if distributed.is_distributed():
        loss_sum, count = distributed.all_sum(torch.stack([loss_sum.double(), torch.tensor(count, device=device,
                                                                                           dtype=torch.float64)]))
        count = int(count)
        if keep_outputs:
            kept = [part for parts in distributed.gather(kept) for part in parts]
    results["loss"] = float(loss_sum) / max(count, 1)
    outputs = Outputs(*(concat(parts) for parts in zip(*kept))) if keep_outputs and kept else None
    return results, outputs


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


@contextlib.contextmanager
def _out_of_memory_is_one_line(s: TrainSettings):
    """A CUDA out-of-memory error anywhere in training or validation (the batch's copy to the device, forward,
    backward, the optimizer's state, evaluation) becomes one line that says what to change."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise CrossmodalError(
            f"out of GPU memory with trainer.batch_size={s.batch_size}: lower it (e.g. "
            f"trainer.batch_size={max(s.batch_size // 2, 1)} trainer.accumulate_grad_batches="
            f"{s.accumulate_grad_batches * 2} keeps the effective batch) or use trainer.precision=bf16") from None


class Trainer:
    """Owns the objects of one training run; `fit()` runs it from `progress` to the end."""

    def __init__(self, model: nn.Module, task, train_loader, val_loader, optimizer: torch.optim.Optimizer,
                 scheduler, settings: TrainSettings, reporter: RunReporter, checkpointer: Checkpointer):
        self.model, self.task, self.optimizer, self.scheduler = model, task, optimizer, scheduler
        self.train_loader, self.val_loader, self.s = train_loader, val_loader, settings
        self.reporter, self.checkpointer = reporter, checkpointer
        self.scaler = torch.amp.GradScaler(settings.device.type, enabled=settings.precision == "fp16")
        self.progress = Progress()
        # Under torchrun the training forward goes through DistributedDataParallel; self.model stays the plain
        # module for evaluation and checkpoints (distributed.py).
        self.train_model = distributed.wrap(model, settings.device, settings.find_unused_parameters)
        self.stopping: int | None = None  # the stop request every process agreed on (torchrun)
        self.data_wait = 0.0  # seconds of this epoch's training spent waiting for the loader
        # One process with a fused optimizer (AdamW/Adam/SGD fused: CUDA by default) and no fp16 loss scaling:
        # a non-finite step is skipped by the optimizer kernel itself (`found_inf`, as GradScaler does for fp16),
        # so no step waits for the device; the skip counters stay on the device and are read at log points.
        self.lazy_skip = (not distributed.is_distributed() and not self.scaler.is_enabled()
                          and bool(getattr(optimizer, "_step_supports_amp_scaling", False)))
        self.skips: dict[str, torch.Tensor] = {}  # "run" (consecutive), "worst" (longest run), "total" since read

    def state(self) -> dict:
        """Everything a resume needs. Under torchrun every process calls it at the same points (collectives): the
        epoch's loss sum is the mean over ranks (so train/loss is the global batches' mean loss) and each rank's
        RNG state is kept (`rng_ranks`) besides rank 0's (`rng`)."""
        progress, rng = asdict(self.progress), rng_state()
        extra = {}
        if distributed.is_distributed():
            progress["loss_sum"] = distributed.mean(self.progress.loss_sum, self.s.device)
            extra["rng_ranks"] = distributed.gather(rng)
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "progress": progress, "rng": rng, **extra}

    def load_state(self, state: dict) -> None:
        """Restore everything but the RNG (restored by the caller, last, after building the loaders)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**state["progress"])

    def fit(self) -> Progress:
        """Train until max_epochs or early stop; raises TrainingInterrupted after saving on SIGINT/SIGTERM."""
        p, s = self.progress, self.s
        with StopSignal() as stop, _out_of_memory_is_one_line(s):
            while p.epoch <= s.max_epochs:
                if p.batch == 0 and s.early_stopping_patience is not None and p.stale >= s.early_stopping_patience:
                    break
                self._train_epoch(stop)
                if self._stop_requested(stop, settle=True):
                    self.checkpointer.save(self.state())
                    raise TrainingInterrupted(self._stop_requested(stop))
                self._end_epoch()
        return p

    def _train_epoch(self, stop: StopSignal) -> None:
        p, s, device = self.progress, self.s, self.s.device
        rows = len(self.train_loader.dataset)
        batches = rows // s.batch_size if self.train_loader.drop_last else -(-rows // s.batch_size)
        self.train_loader.sampler.set_epoch(p.epoch, start=p.batch * s.batch_size)
        if hasattr(self.model, "set_epoch"):  # e.g. gradual unfreezing of encoders
            self.model.set_epoch(p.epoch)
        self.model.train()
        started, loss_sum, group_loss = time.perf_counter() - p.seconds, torch.tensor(p.loss_sum, device=device), 0.0
        bar = tqdm(self.train_loader, desc=f"epoch {p.epoch}/{s.max_epochs}", initial=p.batch, total=batches,
                   leave=False, disable=not s.progress_bar or None, dynamic_ncols=True)
        self.data_wait, ready = 0.0, time.perf_counter()
        for batch in bar:
            self.data_wait += time.perf_counter() - ready  # the step waited this long for the loader
            batch = to_device(batch, device)
            group = min(s.accumulate_grad_batches, batches - (p.batch // s.accumulate_grad_batches)
                        * s.accumulate_grad_batches)  # the last group of an epoch may be shorter
            sync = (p.batch + 1) % s.accumulate_grad_batches == 0 or p.batch + 1 == batches
            with distributed.no_sync(self.train_model, sync):  # gradients all-reduced at a group's last batch
                with autocast(device, s.precision):
                    out = self.train_model(batch["inputs"], batch.get("present"))
                loss = total_loss(self.task, out, batch["target"])
                self.scaler.scale(loss / group).backward()
            loss_sum += loss.detach()
            group_loss = group_loss + loss.detach()
            p.batch += 1
            p.seen += batch["index"].numel() * distributed.world_size()  # global samples
            if p.batch % s.accumulate_grad_batches and p.batch != batches:
                continue
            self._optimizer_step(group_loss, stop)
            group_loss = 0.0
            p.seconds = time.perf_counter() - started
            checkpoint = s.checkpoint_every_n_steps and p.step % s.checkpoint_every_n_steps == 0 and p.batch != batches
            if p.step % s.log_every_n_steps == 0 or checkpoint:
                p.loss_sum = float(loss_sum)  # read at log points only: no host sync for it per step
                self._read_skips()
            if p.step % s.log_every_n_steps == 0:
                rate = p.seen / max(p.seconds, 1e-9)
                bar.set_postfix(loss=f"{p.loss_sum / p.batch:.4f}", samples_s=f"{rate:.0f}")
                self.reporter.scalars({"train/loss_running": p.loss_sum / p.batch, "train/lr": self._base_lr(),
                                       "train/samples_per_second_running": rate,
                                       "train/data_wait_fraction_running": self.data_wait / max(p.seconds, 1e-9),
                                       **self._group_lrs(), **device_memory(device)}, p.step)
            if self._stop_requested(stop):
                break
            if checkpoint:
                self.checkpointer.save(self.state())
            ready = time.perf_counter()
        p.loss_sum = float(loss_sum)
        self._read_skips()
        bar.close()

    def _base_lr(self) -> float:
        """The schedule's learning rate at lr_scale 1 (what optimizer.lr configures), for the logs."""
        groups = self.optimizer.param_groups
        return next((g["lr"] for g in groups if g.get("lr_scale", 1.0) == 1.0), groups[0]["lr"])

    def _group_lrs(self) -> dict[str, float]:
        """{"lr/GROUP": lr} per named parameter group (per-encoder rates, layer-wise decay), for TensorBoard."""
        return {f"lr/{g['name']}": g["lr"] for g in self.optimizer.param_groups
                if "name" in g and not g["name"].endswith("/no_decay")}

    def _stop_requested(self, stop: StopSignal, settle: bool = False) -> int | None:
        """The signal that asks training to stop, or None. Alone: as it arrived. Under torchrun: the request all
        processes agreed on at the last optimizer step (`_finite`), or with `settle` (the epoch's end) agreed now,
        so every process stops after the same step and none waits for another in a collective."""
        if not distributed.is_distributed():
            return stop.requested
        if settle:
            self.stopping = distributed.agree([self.stopping or stop.requested or 0], self.s.device)[0] or None
        return self.stopping

    def _finite(self, group_loss: torch.Tensor, stop: StopSignal) -> bool:
        """Whether the step's loss is finite: one host sync per optimizer step. Under torchrun one all-reduce
        (max) of [non-finite here, signal received here] instead, so every process skips the same steps and
        `_stop_requested` gives every process the same answer."""
        if not distributed.is_distributed():
            return bool(torch.isfinite(group_loss))
        bad, signum = distributed.agree([int(not torch.isfinite(group_loss)), stop.requested or 0], self.s.device)
        self.stopping = self.stopping or signum or None
        return not bad

    def _optimizer_step(self, group_loss: torch.Tensor, stop: StopSignal) -> None:
        """Clip, step, schedule; skip the step (and count it) when the loss is not finite."""
        p, s = self.progress, self.s
        if self.lazy_skip:
            self._step_on_device(group_loss)
            return
        if not self._finite(group_loss, stop):
            self.optimizer.zero_grad(set_to_none=True)
            p.bad_steps += 1
            p.skipped_steps += 1
            log.warning("non-finite loss at step %d (epoch %d): step skipped (%d in a row, %d in all)",
                        p.step + 1, p.epoch, p.bad_steps, p.skipped_steps)
            if p.bad_steps >= s.max_bad_steps:
                self.checkpointer.save(self.state())
                raise CrossmodalError(
                    f"training stopped: {p.bad_steps} consecutive non-finite losses (trainer.max_bad_steps="
                    f"{s.max_bad_steps}) at epoch {p.epoch}; the last good state is in "
                    f"{self.checkpointer.folder / 'last.ckpt'}; try a lower optimizer.lr, trainer.grad_clip, "
                    f"or trainer.precision=fp32")
            return
        p.bad_steps = 0
        if s.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        p.step += 1

    def _step_on_device(self, group_loss: torch.Tensor) -> None:
        """The step without a host sync: the fused optimizer skips it on the device when the loss is not finite
        (its step counts and moments untouched); the schedule and `progress.step` still advance, so a skipped step
        is counted where `_read_skips` finds it, at the next log point."""
        p, s = self.progress, self.s
        bad = (~torch.isfinite(group_loss)).to(torch.int64)
        zero = torch.zeros_like(bad)
        run = (self.skips.get("run", zero) + 1) * bad
        self.skips = {"run": run, "worst": torch.maximum(self.skips.get("worst", zero), run),
                      "total": self.skips.get("total", zero) + bad}
        if s.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
        self.optimizer.grad_scale, self.optimizer.found_inf = None, bad.to(torch.float32)
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.grad_scale, self.optimizer.found_inf
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        p.step += 1

    def _read_skips(self) -> None:
        """Bring the device's skip counters into `progress` (log points, epoch end); stop as _optimizer_step does
        after trainer.max_bad_steps consecutive non-finite steps."""
        if not self.skips:
            return
        p, s = self.progress, self.s
        run, worst, total = torch.stack([self.skips["run"], self.skips["worst"], self.skips["total"]]).tolist()
        self.skips = {"run": self.skips["run"], "worst": self.skips["run"], "total": torch.zeros_like(self.skips["run"])}
        p.bad_steps = run
        if total:
            p.skipped_steps += total
            log.warning("non-finite loss: %d step(s) skipped before step %d (epoch %d; %d in all)", total, p.step,
                        p.epoch, p.skipped_steps)
        if worst >= s.max_bad_steps:
            self.checkpointer.save(self.state())
            raise CrossmodalError(
                f"training stopped: {worst} consecutive non-finite losses (trainer.max_bad_steps={s.max_bad_steps}) "
                f"at epoch {p.epoch}; the last good weights are in {self.checkpointer.folder / 'last.ckpt'}; try a "
                f"lower optimizer.lr, trainer.grad_clip, or trainer.precision=fp32")

    def _end_epoch(self) -> None:
        """Validate, record, update best/early-stop state, checkpoint; move progress to the next epoch."""
        p, s = self.progress, self.s
        distributed.sync_buffers(self.model)  # rank 0's BatchNorm statistics everywhere, as in its checkpoint
        val, _ = evaluate(self.model, self.val_loader, self.task, s.device, s.precision, progress_bar=s.progress_bar)
        loss_sum = distributed.mean(p.loss_sum, s.device)  # over ranks: the global batches' mean loss
        record = {"epoch": p.epoch, "step": p.step, "train/loss": loss_sum / max(p.batch, 1),
                  **{f"val/{k}": v for k, v in val.items()}, "lr": self._base_lr(),
                  "skipped_steps": p.skipped_steps, "seconds": p.seconds,
                  "samples_per_second": p.seen / max(p.seconds, 1e-9),
                  "data_wait_fraction": self.data_wait / max(p.seconds, 1e-9)}
        self.reporter.epoch(record, s.max_epochs)
        is_best = _improved(record[s.monitor], p.best, s.monitor_mode)
        if is_best:
            p.best, p.best_epoch, p.stale = record[s.monitor], p.epoch, 0
        else:
            p.stale += 1
        finished = p.epoch
        p.epoch, p.batch, p.loss_sum, p.seen, p.seconds = p.epoch + 1, 0, 0.0, 0, 0.0
        self.checkpointer.save({**self.state(), "val_metrics": val}, best=is_best, epoch_end=finished)
        if s.early_stopping_patience is not None and p.stale >= s.early_stopping_patience:
            log.info("early stop: %s has not improved for %d epochs (best %.4f at epoch %d)",
                     s.monitor, p.stale, p.best, p.best_epoch)
