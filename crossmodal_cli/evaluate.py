"""`cmeval ckpt=PATH`: rebuild model, tokenizer and labels from a checkpoint alone and evaluate it.

Evaluates the checkpoint's own test split (or `split=val|train`), or `data.test_csv=OTHER.csv`, with the task's
full metrics (the code path cmtrain's final evaluation runs), on CPU or GPU whatever the checkpoint was trained on.
Writes into its folder (by default RUN/eval-DATE_TIME beside the checkpoint's run):
  * metrics.json, and a compact table on the terminal;
  * predictions.csv: row, source CSV, line, the inputs, then the task's columns (classification: the true and the
    predicted label and prob_CLASS per class, column names made safe for any label text);
  * what the task's `report()` holds data for (engine/plots.py): for classification report.txt (per-class
    precision, recall, F1, support), confusion_matrix.csv/.png and calibration.png (reliability diagram);
  * modality_importance.json/.png (importance.py): each modality, and with three each pair, masked as missing,
    and the drop of every per-epoch metric; `importance=false` skips it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from crossmodal_cli.build import (load_data, make_split_loader, rebuild, resolve_device, resolve_precision,
                                  seed_everything)
from crossmodal_cli.data.dataset import resolve_workers
from crossmodal_cli.config.commands import validate_eval
from crossmodal_cli.engine.checkpoint import load_checkpoint
from crossmodal_cli.engine.loop import evaluate as evaluate_loader
from crossmodal_cli.data.table import MODALITIES
from crossmodal_cli.engine.plots import importance_png, write_report
from crossmodal_cli.engine.reporting import metrics_table, write_json
from crossmodal_cli.errors import CrossmodalError, exit_on_user_error
from crossmodal_cli.importance import modality_importance
from crossmodal_cli.paths import config_dir
from crossmodal_cli.data.collate import collate_targets

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
    """Evaluate cfg.ckpt; write the reports into run_dir; return the metrics of the chosen split."""
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
    prediction_table(outputs.indices.numpy(), rows, task.predictions(outputs.values, rows)).to_csv(
        run_dir / "predictions.csv", index=False, float_format="%.6f")
    targets = collate_targets(list(loader.dataset.targets[outputs.indices.numpy()]))
    title = f"{split}, {Path(cfg.ckpt).name}"
    written = write_report(task.report(outputs.values, targets), run_dir, title)
    result = {split: metrics, "checkpoint": str(Path(cfg.ckpt).resolve()), "rows": len(frame)}
    lines = [f"{Path(cfg.ckpt).resolve()} on {split} ({len(frame)} rows)", metrics_table({split: metrics})]
    if cfg.importance and task.fusion({}) is None and len(rebuilt.modalities) > 1:
        importance = modality_importance(model, loader, task, device, precision, rebuilt.modalities, metrics,
                                         split=split, rows=len(frame),
                                         modality_dropout=float(stored.trainer.get("modality_dropout") or 0))
        write_json(run_dir / "modality_importance.json", importance)
        written += [run_dir / "modality_importance.json",
                    importance_png(importance, run_dir / "modality_importance.png")]
        result["modality_importance"] = {k: v["drop"] for k, v in importance["removed"].items()}
        lines += [importance_table(importance), importance["note"]]
    write_json(run_dir / "metrics.json", result)
    lines.append("wrote " + ", ".join(p.name for p in [run_dir / "metrics.json", run_dir / "predictions.csv",
                                                         *written]) + f" in {run_dir}")
    log.info("%s", "\n".join(lines))
    return metrics


def importance_table(importance: dict) -> str:
    """`without      accuracy  f1_macro` rows: each removed modality's drop per metric (and the values left)."""
    names = importance["metrics"]
    head = f"{'without':<14}" + "".join(f"{'drop ' + n:>18}" for n in names)
    rows = [f"{removed:<14}" + "".join(f"{r['drop'][n]:>+11.4f} ({r['metrics'][n]:.3f})" for n in names)
            for removed, r in importance["removed"].items()]
    return "\n".join([head, *rows])


def prediction_table(indices, rows: pd.DataFrame, task_columns: pd.DataFrame) -> pd.DataFrame:
    """predictions.csv: row (in the split), source CSV and its line (the row's id), the inputs (paths, text) as the
    CSV gave them, then the task's columns (label, prediction, probabilities, ...)."""
    inputs = {m: rows[m].to_numpy() for m in MODALITIES if m in rows}
    where = pd.DataFrame({"row": indices, "source": rows["source"].to_numpy(), "line": rows["line"].to_numpy(),
                          **inputs})
    return pd.concat([where, task_columns], axis=1)


def _eval_dir(ckpt: str, stamp: str) -> str:
    """RUN/eval-STAMP beside the run of RUN/checkpoints/NAME.ckpt; DIR/eval-STAMP for a .ckpt anywhere else."""
    path = Path(ckpt).expanduser().resolve()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return str(run / f"eval-{stamp}")


OmegaConf.register_new_resolver("cm_eval_dir", _eval_dir, replace=True)


@hydra.main(config_path=config_dir(), config_name="eval", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Console script `cmeval`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    evaluate(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
