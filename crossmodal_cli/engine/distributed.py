"""Processes: torchrun, the process group and DistributedDataParallel; the one module that knows about ranks.

`torchrun --nproc_per_node=N -m crossmodal_cli.train …` (or `torchrun --nnodes … --rdzv_endpoint …` across
machines) starts N copies of cmtrain with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in their
environment. `setup()`, called by cmtrain's `main` before Hydra composes the config, joins the process group:
backend `cpu:gloo,cuda:nccl` where CUDA and NCCL are there (tensors on a GPU go through NCCL, CPU tensors through
gloo; each process uses the GPU cuda:LOCAL_RANK), `gloo` elsewhere; more processes on a machine than it has GPUs is
refused in one line when a GPU is asked for. `torchrun --nproc_per_node=1` makes a process group of one (the same
DDP/NCCL path as N). Without torchrun and without WORLD_SIZE, or with WORLD_SIZE=1, no
process group exists and every helper here is a constant (`is_main()` is True, `barrier()` does nothing, `wrap()`
returns the model): the single-process path runs exactly as it did before these helpers existed.

The rules the rest of the package follows under torchrun:

* **Rank 0 alone writes files**: the run folder's .hydra/ and log, labels.json, data_report.json, tokenizer/,
  checkpoints, metrics.json(l), TensorBoard, curves.png, the generated demo data, the validation and feature
  caches. Everything that writes asks `is_main()`; a process that needs a file rank 0 writes waits at a
  `barrier()` (`rank_zero_first()` for "rank 0 makes it, the others then read it"). Other ranks log errors only.
  Across machines the run folder and the data must be on a file system every node sees (every rank reads the
  checkpoint it resumes from, and best.ckpt for the final metrics).
* **One run folder**: the run folder's time stamp is rank 0's (`start_time()`, broadcast once in `setup()`; the
  `cm_now` resolver of configs/train.yaml reads it), so every process resolves the same hydra.run.dir.
* **trainer.batch_size is the global batch**: each process loads batch_size / world_size rows per step (a batch
  size that does not divide is refused), so a run's optimizer steps, learning-rate schedule and checkpoints mean the
  same with any number of processes, and a checkpoint resumes with another number of processes.
* **Sharding**: the epoch order depends only on (seed, epoch); process r takes positions r, r + W, r + 2W, … of it
  (`data.dataset.EpochSampler`), so global batch k holds the same rows as batch k of one process, and the position
  in an epoch is counted in global samples.
* **Agreement**: whatever decides control flow (a non-finite loss, a stop request from SIGINT/SIGTERM) is settled by
  `agree()`, a max over ranks, so every process skips the same step and stops after the same step.
* **Metrics**: torchmetrics syncs its states across the process group in `compute()`; the loop adds up loss sums and
  row counts with `all_sum()`. Validation and test rows are sharded without padding, so no row counts twice.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)
_START: dt.datetime | None = None  # rank 0's start time, agreed in setup()
_GPUS_SHORT: tuple[int, int] | None = None  # (processes on this machine, its GPUs) when fewer GPUs than processes


@dataclass(frozen=True)
class Ranks:
    """This process's place among the torchrun workers (0, 0, 1 when started alone)."""

    rank: int
    local_rank: int
    world_size: int


def env_ranks() -> Ranks:
    """RANK, LOCAL_RANK and WORLD_SIZE as torchrun sets them; a plain start is rank 0 of 1."""
    return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                 int(os.environ.get("WORLD_SIZE", 1)))


def setup() -> Ranks:
    """Join the process group when WORLD_SIZE > 1 or torchrun started this process (env:// rendezvous from
    torchrun's variables) and agree on rank 0's start time; nothing when started alone. Called once, before Hydra,
    so the run folder is known to all."""
    global _START, _GPUS_SHORT
    ranks = env_ranks()
    if (ranks.world_size <= 1 and not launched_by_torchrun()) or is_distributed():
        return ranks
    cuda = torch.cuda.is_available() and dist.is_nccl_available()
    if cuda:
        local, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", 1)), torch.cuda.device_count()
        if local > gpus:  # two processes on one GPU: NCCL refuses; refused in one line if a GPU is asked for
            _GPUS_SHORT = (local, gpus)
        torch.cuda.set_device(ranks.local_rank % gpus)
    try:
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    except (ValueError, RuntimeError) as err:  # e.g. WORLD_SIZE set by hand without MASTER_ADDR/MASTER_PORT
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CrossmodalError(f"WORLD_SIZE={ranks.world_size}: cannot join the other processes ({detail}); start "
                              f"cmtrain with torchrun, or unset WORLD_SIZE") from None
    _START = broadcast(dt.datetime.now())
    if ranks.rank == 0:
        log.debug("process group: %d processes, backend %s", ranks.world_size, dist.get_backend())
    return ranks


def shutdown() -> None:
    """Leave the process group (end of cmtrain)."""
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes files and logs (rank 0, or the only process)."""
    return rank() == 0


def start_time() -> dt.datetime:
    """Rank 0's start time under torchrun; now (this process's) otherwise."""
    return _START if _START is not None and is_distributed() else dt.datetime.now()


def hydra_overrides(argv: list[str]) -> list[str]:
    """Command-line overrides that keep ranks other than 0 out of the run folder: no .hydra/, no log file (Hydra's
    job logging `disabled` = errors only, on stderr). `cmtrain -m` under torchrun is refused: a sweep launches its
    own jobs; run one torchrun per job (hydra/launcher=submitit_slurm does)."""
    if not is_distributed():
        return []
    if any(a in ("-m", "--multirun") for a in argv):
        raise CrossmodalError("cmtrain -m under torchrun: sweep jobs each need their own torchrun; run cmtrain -m "
                              "without torchrun, or one torchrun per job")
    return [] if is_main() else ["hydra.output_subdir=null", "hydra/job_logging=disabled"]


def backend() -> str:
    """The process group's backend (`cpu:gloo,cuda:nccl` or `gloo`); "" without one."""
    return str(dist.get_backend()) if is_distributed() else ""


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.run) sets TORCHELASTIC_RUN_ID in every process it starts, also with one process:
    then a process group of one is made, so `torchrun --nproc_per_node=1` runs the same DDP/NCCL path as N."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def device(requested: torch.device) -> torch.device:
    """The device of this process: cuda:LOCAL_RANK under torchrun when a GPU was asked for, else `requested`."""
    if is_distributed() and requested.type == "cuda":
        if _GPUS_SHORT:
            local, gpus = _GPUS_SHORT
            raise CrossmodalError(f"torchrun started {local} processes on this machine but it has {gpus} GPU(s): "
                                  f"use --nproc_per_node={gpus} (one process per GPU), or trainer.device=cpu")
        return torch.device("cuda", torch.cuda.current_device())
    return requested


def local_batch(batch_size: int) -> int:
    """Rows per process and step for the global trainer.batch_size; refused when it does not divide evenly."""
    world = world_size()
    if batch_size % world:
        raise CrossmodalError(f"trainer.batch_size={batch_size}: the global batch must divide evenly among the "
                              f"{world} processes; use a multiple of {world} (e.g. trainer.batch_size="
                              f"{max(world, batch_size // world * world)})")
    return batch_size // world


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block first (making files: demo data, caches); the others wait, then run it (reading them)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's `value` (any picklable object), on every process."""
    if not is_distributed():
        return value
    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any]:
    """[value of rank 0, value of rank 1, …] on every process (picklable objects)."""
    if not is_distributed():
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over ranks (in place, returned)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def mean(value: float, device: torch.device) -> float:
    """The mean of a number over ranks."""
    if not is_distributed():
        return value
    return float(all_sum(torch.tensor(value, dtype=torch.float64, device=device))) / world_size()


def agree(flags: list[int], device: torch.device) -> list[int]:
    """The maximum of each integer flag over ranks (one all-reduce): a decision every process takes alike."""
    if not is_distributed():
        return list(flags)
    tensor = torch.tensor(flags, dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [int(v) for v in tensor.tolist()]


def wrap(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around `model` under torchrun (the model itself otherwise).

    The caller keeps the unwrapped model for evaluation and checkpoints (state-dict keys without `module.`); only
    the training forward goes through the wrapper, which averages gradients over ranks in backward. DDP registers
    the parameters that require gradients when it is built: with `find_unused_parameters` (an encoder frozen now
    and unfrozen later, `unfreeze_at_epoch`) every parameter is registered and those without a gradient in a step
    are skipped; a frozen encoder that stays frozen needs neither.
    """
    if not is_distributed():
        return model
    frozen = [p for p in model.parameters() if not p.requires_grad] if find_unused_parameters else []
    for p in frozen:
        p.requires_grad_(True)
    try:
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                   find_unused_parameters=find_unused_parameters)
    finally:
        for p in frozen:
            p.requires_grad_(False)


def no_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """`model.no_sync()` on the micro-batches of gradient accumulation that are not the last of their group (no
    gradient all-reduce until the step's last backward); nothing for a plain model."""
    if sync or not isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: each rank's last training step updated its
    own, and evaluation and checkpoints should see one model."""
    if is_distributed():
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def rank_rng(state: dict) -> dict:
    """This rank's RNG state from a checkpoint: its own (`rng_ranks`) when the checkpoint was written by as many
    processes, else rank 0's (`rng`) on every rank: then the dropout masks differ from an uninterrupted run (and
    repeat across ranks until the run ends), never the data order or augmentation, which are keyed by seed, epoch
    and row."""
    ranks = state.get("rng_ranks") or []
    return ranks[rank()] if len(ranks) == world_size() > 1 else state["rng"]


class Silent:
    """Stands in for an object that writes files (the RunReporter) on ranks other than 0: every method call does
    nothing and returns None."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None
