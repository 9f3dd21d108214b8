"""The training loop: `train_step` (AMP, accumulation, clipping, the optimizer step, the schedule), epochs with
validation, best/early-stop bookkeeping and checkpoints.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from crossmodal_cli.engine import distributed
from crossmodal_cli.engine.checkpoint import Checkpointer, rng_state
from crossmodal_cli.engine.evaluation import device_memory, evaluate, to_device, total_loss
from crossmodal_cli.engine.interrupt import StopSignal, TrainingInterrupted
from crossmodal_cli.engine.nonfinite import NonFinite
from crossmodal_cli.engine.reporting import RunReporter
from crossmodal_cli.engine.runtime import autocast
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.model import EpochScheduled
from crossmodal_cli.settings.run import TrainerSettings

log = logging.getLogger(__name__)


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
    pruned_at: int = 0          # the epoch after which a search's pruner stopped this run (0: not pruned)


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


@contextlib.contextmanager
def _out_of_memory_is_one_line(s: TrainerSettings):
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
    """Owns the objects of one training run; `fit()` runs it from `progress` to the end.

    `model` is any nn.Module; one that declares an epoch schedule (subclasses `model.EpochScheduled`, as
    MultimodalModel does) gets `set_epoch(epoch)` at the start of every epoch, any other none.
    `s` is the trainer config group as it is (configs/trainer/*.yaml); `device` and `precision` are resolved.
    `find_unused_parameters` (torchrun): DDP registers frozen parameters that unfreeze later.
    `prune(epoch, value, last) -> bool` (an Optuna search's trial, search/trial.py): given each epoch's monitored
    value after its checkpoint (`last`: the final epoch); True stops training there, as an early stop does (rank 0
    decides under torchrun)."""

    def __init__(self, model: nn.Module, task, train_loader, val_loader, optimizer: torch.optim.Optimizer,
                 scheduler, settings: TrainerSettings, reporter: RunReporter, checkpointer: Checkpointer, *,
                 device: torch.device, precision: str, find_unused_parameters: bool = False,
                 prune: Callable[[int, float], bool] | None = None):
        self.prune = prune
        self.model, self.task, self.optimizer, self.scheduler = model, task, optimizer, scheduler
        self.train_loader, self.val_loader, self.s = train_loader, val_loader, settings
        self.device, self.precision = device, precision
        self.progress_bar = settings.progress_bar and distributed.is_main()
        self.reporter, self.checkpointer = reporter, checkpointer
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.progress = Progress()
        # Under torchrun the training forward goes through DistributedDataParallel; self.model stays the plain
        # module for evaluation and checkpoints (distributed.py).
        self.train_model = distributed.wrap(model, device, find_unused_parameters)
        self.non_finite = NonFinite(optimizer, self.scaler, device)
        self.data_wait = 0.0  # seconds of this epoch's training spent waiting for the loader
        self.loss_sum: torch.Tensor | float = 0.0    # this epoch's batch losses so far (on the device)
        self.group_loss: torch.Tensor | float = 0.0  # the accumulation group's losses so far

    def state(self) -> dict:
        """Everything a resume needs. Under torchrun every process calls it at the same points (collectives): the
        epoch's loss sum is the mean over ranks (so train/loss is the global batches' mean loss) and each rank's
        RNG state is kept (`rng_ranks`) besides rank 0's (`rng`)."""
        progress, rng = asdict(self.progress), rng_state()
        extra = {}
        if distributed.is_distributed():
            progress["loss_sum"] = distributed.mean(self.progress.loss_sum, self.device)
            extra["rng_ranks"] = distributed.gather(rng)
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "progress": progress, "rng": rng, **extra}

    def load_state(self, state: dict) -> None:
        """Restore everything but the RNG (restored by the caller, last, after building the loaders)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        try:
            self.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, ValueError, IndexError) as err:  # another structure: e.g. warm-up phases differ
            raise CrossmodalError(
                f"trainer.max_epochs={self.s.max_epochs}: the learning-rate schedule of this run was built for "
                f"another length and its state does not fit the new one ({type(err).__name__}: {err}); resume "
                f"with the run's own trainer.max_epochs, or start a new run") from None
        self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**state["progress"])

    def fit(self) -> Progress:
        """Train until max_epochs or early stop; raises TrainingInterrupted after saving on SIGINT/SIGTERM.
        trainer.max_epochs=0: no training, the initial model is validated and saved (`_validate_untrained`)."""
        p, s = self.progress, self.s
        with StopSignal() as stop, _out_of_memory_is_one_line(s):
            if s.max_epochs == 0 and p.epoch == 1 and p.batch == 0:
                self._validate_untrained()
            while p.epoch <= s.max_epochs:
                if p.batch == 0 and (p.pruned_at or s.early_stopping_patience is not None
                                     and p.stale >= s.early_stopping_patience):
                    break
                self._train_epoch(stop)
                if self._stop_requested(stop, settle=True):
                    self.checkpointer.save(self.state())
                    raise TrainingInterrupted(self._stop_requested(stop))
                self._end_epoch()
        return p

    def train_step(self, batch: dict, batches: int, stop: StopSignal) -> bool:
        """One batch: forward, the task's losses, backward; at the last batch of an accumulation group the
        optimizer step (clip, step, schedule), skipped when the group's loss is not finite. Returns whether the
        group ended here."""
        p, s = self.progress, self.s
        k = s.accumulate_grad_batches
        group = min(k, batches - (p.batch // k) * k)  # the last group of an epoch may be shorter
        last = (p.batch + 1) % k == 0 or p.batch + 1 == batches
        with distributed.no_sync(self.train_model, last):  # gradients all-reduced at a group's last batch only
            with autocast(self.device, self.precision):
                out = self.train_model(batch["inputs"], batch.get("present"))
            loss = total_loss(self.task, out, batch["target"])
            self.scaler.scale(loss / group).backward()
        self.loss_sum = self.loss_sum + loss.detach()
        self.group_loss = self.group_loss + loss.detach()
        p.batch += 1
        p.seen += batch["index"].numel() * distributed.world_size()  # global samples
        if not last:
            return False
        group_loss, self.group_loss = self.group_loss, 0.0
        if not self.non_finite.check(group_loss, p, stop.requested):
            self.optimizer.zero_grad(set_to_none=True)
            self._stop_after_bad_steps(p.bad_steps)
            return True
        if s.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
        with self.non_finite.stepping():  # fused optimizer, one process: the kernel skips a non-finite step
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        p.step += 1
        return True

    def _train_epoch(self, stop: StopSignal) -> None:
        p, s = self.progress, self.s
        rows = len(self.train_loader.dataset)
        batches = rows // s.batch_size if self.train_loader.drop_last else -(-rows // s.batch_size)
        self.train_loader.sampler.set_epoch(p.epoch, start=p.batch * s.batch_size)
        if isinstance(self.model, EpochScheduled):  # a model with an epoch schedule (gradual unfreezing)
            self.model.set_epoch(p.epoch)
        self.model.train()
        started = time.perf_counter() - p.seconds
        self.loss_sum, self.group_loss = torch.tensor(p.loss_sum, device=self.device), 0.0
        bar = tqdm(self.train_loader, desc=f"epoch {p.epoch}/{s.max_epochs}", initial=p.batch, total=batches,
                   leave=False, disable=not self.progress_bar or None, dynamic_ncols=True)
        self.data_wait, ready = 0.0, time.perf_counter()
        for batch in bar:
            self.data_wait += time.perf_counter() - ready  # the step waited this long for the loader
            if not self.train_step(to_device(batch, self.device), batches, stop):
                continue
            p.seconds = time.perf_counter() - started
            checkpoint = s.checkpoint_every_n_steps and p.step % s.checkpoint_every_n_steps == 0 and p.batch != batches
            if p.step % s.log_every_n_steps == 0 or checkpoint:
                p.loss_sum = float(self.loss_sum)  # read at log points only: no host sync for it per step
                self._read_skips()
            if p.step % s.log_every_n_steps == 0:
                rate = p.seen / max(p.seconds, 1e-9)
                bar.set_postfix(loss=f"{p.loss_sum / p.batch:.4f}", samples_s=f"{rate:.0f}")
                self.reporter.scalars({"train/loss_running": p.loss_sum / p.batch, "train/lr": self._base_lr(),
                                       "train/samples_per_second_running": rate,
                                       "train/data_wait_fraction_running": self.data_wait / max(p.seconds, 1e-9),
                                       **self._group_lrs(), **device_memory(self.device)}, p.step)
            if self._stop_requested(stop):
                break
            if checkpoint:
                self.checkpointer.save(self.state())
            ready = time.perf_counter()
        p.loss_sum = float(self.loss_sum)
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
        processes agreed on at the last optimizer step (NonFinite.check), or with `settle` (the epoch's end)
        agreed now, so every process stops after the same step and none waits for another in a collective."""
        if not distributed.is_distributed():
            return stop.requested
        guard = self.non_finite
        if settle:
            guard.stopping = distributed.agree([guard.stopping or stop.requested or 0], self.device)[0] or None
        return guard.stopping

    def _read_skips(self) -> None:
        """The device's skip counters into `progress` (log points, epoch end)."""
        self._stop_after_bad_steps(self.non_finite.read(self.progress))

    def _stop_after_bad_steps(self, run: int) -> None:
        """After trainer.max_bad_steps consecutive non-finite losses: save last.ckpt and stop in one line."""
        p, s = self.progress, self.s
        if run < s.max_bad_steps:
            return
        self.checkpointer.save(self.state())
        raise CrossmodalError(
            f"training stopped: {run} consecutive non-finite losses (trainer.max_bad_steps={s.max_bad_steps}) at "
            f"epoch {p.epoch}; the last good state is in {self.checkpointer.folder / 'last.ckpt'}; try a lower "
            f"optimizer.lr, trainer.grad_clip, or trainer.precision=fp32")

    def _validate_untrained(self) -> None:
        """The model as built (pretrained encoders, a head started from them) validated as epoch 0 and saved as
        last.ckpt and best.ckpt, so the end of the run, cmeval and cmsweep see a normal run (a resume with more
        epochs trains from it)."""
        p = self.progress
        val, _ = evaluate(self.model, self.val_loader, self.task, self.device, self.precision,
                          progress_bar=self.progress_bar)
        record = {"epoch": 0, "step": 0, "train/loss": None, **{f"val/{k}": v for k, v in val.items()},
                  "lr": self._base_lr(), "skipped_steps": 0, "seconds": 0.0}
        self.reporter.epoch(record, 0)
        p.best, p.best_epoch = record[self.s.monitor], 0
        self.checkpointer.save({**self.state(), "val_metrics": val}, best=True)

    def _end_epoch(self) -> None:
        """Validate, record, update best/early-stop state, checkpoint; move progress to the next epoch."""
        p, s = self.progress, self.s
        distributed.sync_buffers(self.model)  # rank 0's BatchNorm statistics everywhere, as in its checkpoint
        val, _ = evaluate(self.model, self.val_loader, self.task, self.device, self.precision,
                          progress_bar=self.progress_bar)
        loss_sum = distributed.mean(p.loss_sum, self.device)  # over ranks: the global batches' mean loss
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
        if self.prune is not None:
            last = finished >= s.max_epochs  # reported, but a finished run is not pruned
            stop = int(bool(self.prune(finished, record[s.monitor], last))) if distributed.is_main() else 0
            if distributed.agree([stop], self.device)[0]:
                p.pruned_at = finished
        if s.early_stopping_patience is not None and p.stale >= s.early_stopping_patience:
            log.info("early stop: %s has not improved for %d epochs (best %.4f at epoch %d)",
                     s.monitor, p.stale, p.best, p.best_epoch)
