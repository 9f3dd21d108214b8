"""The optimizer over the model's parameter groups (per-encoder learning rates, layer-wise decay, no weight decay on
biases and normalisation weights); fused kernels on CUDA."""
from __future__ import annotations

import torch
from omegaconf import DictConfig

from crossmodal_cli.build import instantiate_node
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.model import MultimodalModel


FUSED_OPTIMIZERS = ("torch.optim.AdamW", "torch.optim.Adam", "torch.optim.SGD")


def build_optimizer(cfg: DictConfig, model: MultimodalModel) -> torch.optim.Optimizer:
    """The configured optimizer over the model's parameter groups (each encoder's layers at optimizer.lr x its
    lr_scale x layer_decay**depth, fusion + head at optimizer.lr); biases and normalisation weights (1-d
    parameters) get no weight decay. Frozen parameters are included, so unfreezing needs no new optimizer. On
    CUDA, torch's AdamW/Adam/SGD run fused (`fused=True`) unless the optimizer config sets `fused` itself."""
    make = instantiate_node(cfg.optimizer, "optimizer")
    base = cfg.optimizer.lr
    groups = []
    for group in model.parameter_groups():
        decay = [p for p in group["params"] if p.ndim > 1]
        no_decay = [p for p in group["params"] if p.ndim <= 1]
        lr = base * group["lr_scale"]
        groups += [{"params": decay, "lr": lr, "name": group["name"], "lr_scale": group["lr_scale"]},
                   {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{group['name']}/no_decay",
                    "lr_scale": group["lr_scale"]}]
    extra = {}
    if (cfg.optimizer._target_ in FUSED_OPTIMIZERS and "fused" not in cfg.optimizer
            and any(p.is_cuda for p in model.parameters())):
        extra["fused"] = True  # one kernel per parameter group instead of a loop over tensors (CUDA only)
    try:
        return make([g for g in groups if g["params"]], **extra)
    except (TypeError, ValueError) as err:
        raise CrossmodalError(f"optimizer: {err}") from None
