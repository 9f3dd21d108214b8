"""`cmeval ckpt=PATH`: rebuild model, tokenizer and labels from a checkpoint alone and evaluate it.

Evaluates the checkpoint's own test split (or `split=val|train`), or `data.test_csv=OTHER.csv`, with the task's
full metrics; writes metrics.json and predictions.csv (row, source file, CSV line, then the task's columns: for
classification the true and predicted label and one probability column per class).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from crossmodal_cli.build import (load_data, make_split_loader, rebuild, resolve_device, resolve_precision,
                                  seed_everything)
from crossmodal_cli.data.dataset import resolve_workers
from crossmodal_cli.config.commands import validate_eval
from crossmodal_cli.engine.checkpoint import load_checkpoint
from crossmodal_cli.engine.loop import evaluate as evaluate_loader
from crossmodal_cli.engine.reporting import metrics_table, write_json
from crossmodal_cli.errors import CrossmodalError, exit_on_user_error
from crossmodal_cli.paths import config_dir

log = logging.getLogger(__name__)


def check_config(cfg: DictConfig) -> None:
    """Every value of a composed cmeval config, checked before anything is read (one line per mistake, exit 2)."""
    validate_eval(cfg)
    if not Path(cfg.ckpt).expanduser().is_file():
        raise CrossmodalError(f"ckpt={cfg.ckpt}: checkpoint not found (expected e.g. "
                              f"outputs/DATE/TIME/checkpoints/best.ckpt)")
    resolve_precision(cfg.trainer.precision, resolve_device(cfg.trainer.device))


def _data_config(stored: DictConfig, overrides: DictConfig) -> tuple[DictConfig, str | None]:
    """The stored data config with the command line's data.* applied; with data.test_csv, that CSV is the test
    split. Returns (data config, the split it forces or None)."""
    data = stored.data
    if overrides.allow_outside_root is not None:
        data.allow_outside_root = overrides.allow_outside_root
    for key, name in (overrides.get("columns") or {}).items():
        if name is not None:
            data.columns[key] = name
    if not overrides.test_csv:
        if overrides.root:
            data.root = str(Path(overrides.root).resolve())
        return data, None
    data.csv = data.train_csv = data.val_csv = None
    data.test_csv = str(Path(overrides.test_csv).resolve())
    data.root = str(Path(overrides.root).resolve()) if overrides.root else None
    data.demo = None
    return data, "test"


def evaluate(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Evaluate cfg.ckpt; return the metrics of the chosen split."""
    run_dir = Path(run_dir)
    check_config(cfg)
    state = load_checkpoint(cfg.ckpt)
    rebuilt = rebuild(state)
    stored, task = rebuilt.config, rebuilt.task
    data, forced = _data_config(stored, cfg.data)
    split = forced or cfg.split
    seed_everything(stored.seed)
    device = resolve_device(cfg.trainer.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    table = load_data(data, rebuilt.modalities, stored.seed, task, keep=[split])
    if len(table.splits[split]) == 0:
        raise CrossmodalError(f"{cfg.ckpt}: the stored data has no {split} split; "
                              f"pass data.test_csv=FILE.csv or split=val")
    tokenizer, model = rebuilt.tokenizer, rebuilt.model.to(device)
    loader = make_split_loader(table, split, stored, tokenizer, batch_size=cfg.trainer.batch_size or
                               stored.trainer.batch_size, train=False, seed=stored.seed,
                               num_workers=resolve_workers(cfg.trainer.num_workers), pin_memory=device.type == "cuda")
    metrics, outputs = evaluate_loader(model, loader, task, device, precision, keep_outputs=True, desc=split,
                                       progress_bar=True, full=True)
    frame = table.splits[split]
    rows = frame.iloc[outputs.indices.numpy()].reset_index(drop=True)
    where = pd.DataFrame({"row": outputs.indices.numpy(), "source": rows["source"].to_numpy(),
                          "line": rows["line"].to_numpy()})
    pd.concat([where, task.predictions(outputs.values, rows)], axis=1).to_csv(
        run_dir / "predictions.csv", index=False, float_format="%.6f")
    write_json(run_dir / "metrics.json", {split: metrics, "checkpoint": str(Path(cfg.ckpt).resolve()),
                                          "rows": len(frame)})
    log.info("%s on %s (%d rows)\n%s\nwrote %s", Path(cfg.ckpt).name, split, len(frame),
             metrics_table({split: metrics}), run_dir / "predictions.csv")
    return metrics


@hydra.main(config_path=config_dir(), config_name="eval", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Console script `cmeval`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    evaluate(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
