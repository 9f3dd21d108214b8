"""`cmtrain resume=RUN_DIR`: the config stored in the checkpoint to resume, with the command line's trainer.*
overrides applied and checked against where the checkpoint stopped."""
from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from crossmodal_cli.config.resolvers import resume_checkpoint
from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)


def resumed_config(resume: str, overrides: list[str]) -> tuple[DictConfig, dict]:
    """(the stored config with the trainer.* overrides applied, the loaded checkpoint)."""
    from crossmodal_cli.engine.checkpoint import load_checkpoint, stored_config

    path = resume_checkpoint(resume)
    state = load_checkpoint(path)
    if "progress" not in state:
        raise CrossmodalError(f"{path}: this checkpoint has no training state to resume from")
    stored = OmegaConf.create(stored_config(state))
    changes = [o for o in overrides if not o.startswith(("resume=", "hydra."))]
    other = [o for o in changes if not o.lstrip("+~").startswith("trainer.")]
    if other:
        raise CrossmodalError(f"resume: only trainer.* settings can change when resuming (got {', '.join(other)}); "
                              f"start a new run to change the model or the data")
    before = OmegaConf.to_container(stored.trainer)
    for override in OverridesParser.create().parse_overrides(changes):
        OmegaConf.update(stored, override.key_or_group, override.value(), merge=False)
    check_epoch_position(path, state["progress"], before, stored.trainer)
    stored.resume = str(path.resolve())
    log.info("resuming %s at epoch %d, step %d%s", path, state["progress"]["epoch"], state["progress"]["step"],
             f" with {', '.join(changes)}" if changes else "")
    return stored, state


def check_epoch_position(path: Path, progress: dict, before: dict, after: DictConfig) -> None:
    """Mid-epoch, the position in the epoch is counted in batches: a different batch size (or accumulation, or
    drop_last) would skip or repeat rows, so such changes wait for a checkpoint written at an epoch end."""
    if not progress["batch"]:
        return
    for key in ("batch_size", "accumulate_grad_batches", "drop_last"):
        if after.get(key) != before.get(key):
            raise CrossmodalError(
                f"trainer.{key}={after.get(key)}: {path.name} stopped inside epoch {progress['epoch']} (after "
                f"{progress['batch']} batches of trainer.batch_size={before.get('batch_size')}), so trainer.{key} "
                f"must stay {before.get(key)} until the epoch ends; resume without it, or from a checkpoint written "
                f"at an epoch end (epoch-NNN.ckpt with trainer.keep_last_k > 0)")
