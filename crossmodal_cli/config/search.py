"""The direction of a hyperparameter search follows the monitored metric (configs/hparams_search/optuna.yaml).

Optuna's sweeper reads `hydra.sweeper.direction` once, when the sweep starts, from the composed config. That config
may leave `trainer.monitor` / `trainer.monitor_mode` null (the task's own metric and its direction, resolved by
`cmtrain` at start-up), so the YAML names the resolver `${cm_sweep_direction:}`, which asks the configured task
the same way `cmtrain` does: maximize for accuracy or mAP, minimize for mae or val/loss.
"""
from __future__ import annotations

import copy

from omegaconf import DictConfig, OmegaConf, open_dict, read_write


def sweep_direction(*, _root_: DictConfig) -> str:
    """'maximize' or 'minimize': the direction in which trainer.monitor improves, for the configured task."""
    from crossmodal_cli.build import build_task
    from crossmodal_cli.train import resolve_monitor

    cfg = copy.deepcopy(_root_)
    with read_write(cfg), open_dict(cfg):
        cfg.pop("hydra", None)
    trainer = OmegaConf.create(OmegaConf.to_container(cfg.trainer, resolve=True))
    resolve_monitor(trainer, build_task(cfg))
    return "maximize" if trainer.monitor_mode == "max" else "minimize"


OmegaConf.register_new_resolver("cm_sweep_direction", sweep_direction, replace=True)
