"""`cmpredict ckpt=PATH data.csv=NEW.csv`: a trained checkpoint's predictions for a CSV, labelled or not.

The model, tokenizer, task and input settings come from the checkpoint alone (`build.rebuild`, as in cmeval). The
CSV needs the checkpoint's input columns (`data.columns.*` maps other names); a label column is neither needed
nor read. Writes, into its run folder:
  * predictions.csv: row, source CSV, line, the inputs (paths, text), then the task's columns (for classification
    the predicted label and one probability per class; `predict.top_k=K` adds the K most probable labels);
  * with `predict.embeddings=true`, embeddings.npz: `row` (the row numbers), `fused` (each row's fused features,
    what the task's head reads), `pooled/MODALITY` (each encoder's pooled output) and the task's own (retrieval:
    `embedding/image`, `embedding/text`, the unit-length vectors it ranks with).
Rows with unusable inputs follow `data.on_missing` (default: the checkpoint's setting).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from crossmodal_cli.build import (load_data, make_split_loader, rebuild, resolve_device, resolve_precision,
                                  seed_everything)
from crossmodal_cli.config.commands import validate_predict
from crossmodal_cli.data.dataset import resolve_workers
from crossmodal_cli.engine.checkpoint import load_checkpoint
from crossmodal_cli.engine.loop import autocast, concat, to_device
from crossmodal_cli.errors import CrossmodalError, exit_on_user_error
from crossmodal_cli.evaluate import prediction_table
from crossmodal_cli.paths import config_dir

log = logging.getLogger(__name__)


def check_config(cfg: DictConfig) -> None:
    """Every value of a composed cmpredict config, checked before anything is read (one line, exit 2)."""
    validate_predict(cfg)
    for key, path in (("ckpt", cfg.ckpt), ("data.csv", cfg.data.csv)):
        if not Path(path).expanduser().is_file():
            raise CrossmodalError(f"{key}={path}: file not found")
    if cfg.data.root and not Path(cfg.data.root).expanduser().is_dir():
        raise CrossmodalError(f"data.root={cfg.data.root}: no such folder")
    resolve_precision(cfg.trainer.precision, resolve_device(cfg.trainer.device))


def _data_config(stored: DictConfig, cfg: DictConfig) -> DictConfig:
    """The checkpoint's data settings, reading cfg.data.csv as one split (in file order) with the given overrides."""
    data = stored.data
    data.csv = data.train_csv = data.val_csv = None
    data.test_csv = str(Path(cfg.data.csv).expanduser().resolve())
    data.root = str(Path(cfg.data.root).expanduser().resolve()) if cfg.data.root else None
    data.demo = None
    for key in ("on_missing", "allow_outside_root"):
        if cfg.data.get(key) is not None:
            data[key] = cfg.data[key]
    for key, name in (cfg.data.get("columns") or {}).items():
        if name is not None:
            data.columns[key] = name
    return data


def predict(cfg: DictConfig, run_dir: str | Path) -> pd.DataFrame:
    """Predict for cfg.data.csv with cfg.ckpt; returns the predictions table (also written to run_dir)."""
    run_dir = Path(run_dir)
    check_config(cfg)
    rebuilt = rebuild(load_checkpoint(Path(cfg.ckpt).expanduser()))
    stored, task = rebuilt.config, rebuilt.task
    top_k = cfg.predict.top_k
    if top_k and not hasattr(task, "top_k"):
        raise CrossmodalError(f"predict.top_k={top_k}: only a classification checkpoint has labels to rank "
                              f"(this one: {stored.task._target_})")
    if top_k and top_k > len(task.classes):
        raise CrossmodalError(f"predict.top_k={top_k}: the checkpoint has {len(task.classes)} classes")
    data = _data_config(stored, cfg)
    seed_everything(stored.seed)
    device = resolve_device(cfg.trainer.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    table = load_data(data, rebuilt.modalities, stored.seed, task, keep=["test"], labels_needed=False)
    frame = table.splits["test"]
    if frame.empty:
        raise CrossmodalError(f"data.csv={cfg.data.csv}: no row left to predict for")
    model = rebuilt.model.to(device).eval()
    loader = make_split_loader(table, "test", stored, rebuilt.tokenizer,
                               batch_size=cfg.trainer.batch_size or stored.trainer.batch_size, train=False,
                               seed=stored.seed, num_workers=resolve_workers(cfg.trainer.num_workers),
                               pin_memory=device.type == "cuda")
    rows, values, embeddings = _run(model, loader, task, device, precision, cfg.predict.embeddings)
    ordered = frame.iloc[rows].reset_index(drop=True)
    table_out = prediction_table(rows, ordered, task.predictions(values, ordered))
    if top_k:
        table_out = pd.concat([table_out, task.top_k(values, top_k)], axis=1)
    table_out.to_csv(run_dir / "predictions.csv", index=False, float_format="%.6f")
    if embeddings is not None:
        np.savez(run_dir / "embeddings.npz", row=rows, **embeddings)
    log.info("%d rows of %s predicted with %s; wrote %s%s", len(table_out), cfg.data.csv, cfg.ckpt,
             run_dir / "predictions.csv", " and embeddings.npz" if embeddings is not None else "")
    return table_out


@torch.no_grad()
def _run(model, loader, task, device: torch.device, precision: str, keep_embeddings: bool):
    """(row numbers, the task's outputs, {"fused", "pooled/MODALITY", the task's own: arrays} or None)."""
    calls: dict[str, list] = {}
    hooks = []
    if keep_embeddings:  # the first call of the head per batch is the fused features (late fusion calls it again)
        hooks.append(model.head.register_forward_pre_hook(
            lambda module, args: calls.setdefault("fused", []).append(_plain(args[0]))))
        for m, encoder in model.encoders.items():
            hooks.append(encoder.register_forward_hook(
                lambda module, args, out, m=m: calls.setdefault(f"pooled/{m}", []).append(out.pooled.float().cpu())))
    rows, values, kept = [], [], {}
    try:
        for batch in loader:
            batch = to_device(batch, device)
            calls.clear()
            with autocast(device, precision):
                out = model(batch["inputs"], batch.get("present"))
            values.append(to_device(task.outputs(out), torch.device("cpu")))
            rows.append(batch["index"].cpu())
            if keep_embeddings:
                own = {k: v.float().cpu() for k, v in task.embeddings(out).items()}
                for key, value in {**{k: v[0] for k, v in calls.items()}, **own}.items():
                    kept.setdefault(key, []).append(value)
    finally:
        for hook in hooks:
            hook.remove()
    embeddings = {k: torch.cat(v).numpy() for k, v in kept.items()} if keep_embeddings else None
    return torch.cat(rows).numpy(), concat(values), embeddings


def _plain(features) -> torch.Tensor:
    """The head's input as one float tensor [B, D] (a dict of pooled outputs, for retrieval: concatenated)."""
    if isinstance(features, dict):
        return torch.cat([features[k].float() for k in sorted(features)], dim=-1).cpu()
    return features.float().cpu()


@hydra.main(config_path=config_dir(), config_name="predict", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Console script `cmpredict`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    predict(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
