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

import dataclasses
import logging
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from crossmodal_cli.config.startup import check_eval
from crossmodal_cli.errors import CrossmodalError, exit_on_user_error
from crossmodal_cli.paths import config_dir
from crossmodal_cli.settings.commands import EvalDataSettings, EvalSettings

log = logging.getLogger(__name__)
check_config = check_eval  # the name configs/eval.yaml's check callback uses


def _data_settings(stored, overrides: EvalDataSettings):
    """The stored data settings with the command line's data.* applied; with data.test_csv, that CSV is the test
    split. Returns (data settings, the split it forces or None)."""
    from crossmodal_cli.inference import one_source, with_columns

    data = with_columns(stored, overrides.columns)
    if overrides.allow_outside_root is not None:
        data = dataclasses.replace(data, allow_outside_root=overrides.allow_outside_root)
    if overrides.test_csv:
        return one_source(data, overrides.test_csv, overrides.root), "test"
    if overrides.root:
        data = dataclasses.replace(data, root=str(Path(overrides.root).expanduser().resolve()))
    return data, None


def evaluate(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Evaluate cfg.ckpt; write the reports into run_dir; return the metrics of the chosen split."""
    return evaluate_checkpoint(check_eval(cfg), Path(run_dir))


def evaluate_checkpoint(settings: EvalSettings, run_dir: Path) -> dict:
    from crossmodal_cli.data.collate import collate_targets
    from crossmodal_cli.engine.checkpoint import load_checkpoint
    from crossmodal_cli.engine.plots import write_report
    from crossmodal_cli.engine.reporting import metrics_table, write_json
    from crossmodal_cli.factory import rebuild
    from crossmodal_cli.inference import Predictor, evaluate_split, prediction_table

    ckpt = Path(settings.ckpt).expanduser()
    rebuilt = rebuild(load_checkpoint(ckpt))
    data, forced = _data_settings(rebuilt.config.data, settings.data)
    split = forced or settings.split
    predictor = Predictor.place(rebuilt, settings.trainer.device, settings.trainer.precision,
                                settings.trainer.batch_size, settings.trainer.num_workers)
    table = predictor.read(data, keep=[split])
    if len(table.splits[split]) == 0:
        raise CrossmodalError(f"{settings.ckpt}: the stored data has no {split} split; "
                              f"pass data.test_csv=FILE.csv or split=val")
    metrics, outputs, loader = evaluate_split(predictor, table, split, progress_bar=True)
    task, frame, order = rebuilt.task, table.splits[split], outputs.indices.numpy()
    rows = frame.iloc[order].reset_index(drop=True)
    prediction_table(order, rows, task.predictions(outputs.values, rows)).to_csv(
        run_dir / "predictions.csv", index=False, float_format="%.6f")
    targets = collate_targets(list(loader.dataset.targets[order]))
    written = write_report(task.report(outputs.values, targets), run_dir, f"{split}, {ckpt.name}")
    result = {split: metrics, "checkpoint": str(ckpt.resolve()), "rows": len(frame)}
    lines = [f"{ckpt.resolve()} on {split} ({len(frame)} rows)", metrics_table({split: metrics})]
    if settings.importance and task.uses_fusion and (len(rebuilt.modalities) > 1 or "tabular" in rebuilt.modalities):
        written += _importance(predictor, loader, metrics, split, len(frame), run_dir, result, lines)
    write_json(run_dir / "metrics.json", result)
    lines.append("wrote " + ", ".join(p.name for p in [run_dir / "metrics.json", run_dir / "predictions.csv",
                                                         *written]) + f" in {run_dir}")
    log.info("%s", "\n".join(lines))
    return metrics


def _importance(predictor, loader, metrics: dict, split: str, rows: int, run_dir: Path, result: dict,
                lines: list[str]) -> list[Path]:
    """modality_importance.json/.png; their summary into `result` and the terminal `lines`."""
    from crossmodal_cli.engine.plots import importance_png
    from crossmodal_cli.engine.reporting import write_json
    from crossmodal_cli.importance import modality_importance

    rebuilt = predictor.rebuilt
    importance = modality_importance(rebuilt.model, loader, rebuilt.task, predictor.device, predictor.precision,
                                     rebuilt.modalities, metrics, split=split, rows=rows,
                                     modality_dropout=float(rebuilt.config.trainer.modality_dropout or 0),
                                     columns=_tabular_columns(rebuilt))
    write_json(run_dir / "modality_importance.json", importance)
    result["modality_importance"] = {k: v["drop"] for k, v in removals(importance).items()}
    lines += [importance_table(importance), importance["note"]]
    return [run_dir / "modality_importance.json", importance_png(importance, run_dir / "modality_importance.png")]


def _tabular_columns(rebuilt) -> dict[str, list[str]] | None:
    """The checkpoint's tabular columns by kind, for per-column importance; None without the tabular modality."""
    if rebuilt.tabular is None or "tabular" not in rebuilt.modalities:
        return None
    return {"numeric": rebuilt.tabular.numeric_columns, "categorical": rebuilt.tabular.categorical_columns}


def removals(importance: dict) -> dict:
    """Every removal of the report by its row name: modalities (and pairs) as named, tabular columns as
    "column NAME"."""
    return {**importance["removed"], **{f"column {c}": r for c, r in importance.get("columns", {}).items()}}


def importance_table(importance: dict) -> str:
    """`without      accuracy  f1_macro` rows: each removed modality's (and tabular column's) drop per metric (and
    the values left)."""
    names = importance["metrics"]
    rows = removals(importance)
    width = max([14, *(len(r) + 2 for r in rows)])
    head = f"{'without':<{width}}" + "".join(f"{'drop ' + n:>18}" for n in names)
    lines = [f"{removed:<{width}}" + "".join(f"{r['drop'][n]:>+11.4f} ({r['metrics'][n]:.3f})" for n in names)
             for removed, r in rows.items()]
    return "\n".join([head, *lines])


@hydra.main(config_path=config_dir(), config_name="eval", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Console script `cmeval`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    evaluate(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
