"""One pass of a model over a loader: the loss and the task's metrics, and (for reports and predictions) every
row's outputs. Shared by validation in the loop, the end of a run, cmeval, cmpredict and the Python API.

Under torchrun each process evaluates its shard of the split (without padding: no row twice) and the results cover
the whole split on every process: torchmetrics syncs its states in compute(), the loss sum and the row count are
added up over ranks, kept outputs are gathered (in shard order; `indices` says which row each is).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from crossmodal_cli.engine import distributed
from crossmodal_cli.engine.runtime import autocast


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
