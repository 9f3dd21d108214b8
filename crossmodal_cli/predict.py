"""`cmpredict ckpt=PATH data.csv=NEW.csv`: a trained checkpoint's predictions for a CSV, labelled or not.

The model, tokenizer, task and input settings come from the checkpoint alone (`factory.rebuild`, as in cmeval). The
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
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from crossmodal_cli.config.startup import check_predict
from crossmodal_cli.errors import CrossmodalError, exit_on_user_error
from crossmodal_cli.paths import config_dir
from crossmodal_cli.settings.commands import PredictSettings

log = logging.getLogger(__name__)
check_config = check_predict  # the name configs/predict.yaml's check callback uses


def _data_settings(stored, settings: PredictSettings):
    """The checkpoint's data settings, reading data.csv as one split (in file order) with the given overrides."""
    from crossmodal_cli.inference import one_source, with_columns

    given = settings.data
    changes = {key: getattr(given, key) for key in ("on_missing", "allow_outside_root")
               if getattr(given, key) is not None}
    return one_source(with_columns(stored, given.columns), given.csv, given.root, **changes)


def predict(cfg: DictConfig, run_dir: str | Path):
    """Predict for cfg.data.csv with cfg.ckpt; returns the predictions table (also written to run_dir)."""
    return predict_checkpoint(check_predict(cfg), Path(run_dir))


def predict_checkpoint(settings: PredictSettings, run_dir: Path):
    import numpy as np

    from crossmodal_cli.engine.checkpoint import load_checkpoint
    from crossmodal_cli.factory import rebuild
    from crossmodal_cli.inference import Predictor, check_top_k

    rebuilt = rebuild(load_checkpoint(Path(settings.ckpt).expanduser()))
    top_k = settings.predict.top_k
    check_top_k(rebuilt.task, top_k, rebuilt.config.task["_target_"])
    predictor = Predictor.place(rebuilt, settings.trainer.device, settings.trainer.precision,
                                settings.trainer.batch_size, settings.trainer.num_workers)
    table = predictor.read(_data_settings(rebuilt.config.data, settings), keep=["test"], labels_needed=False)
    if table.splits["test"].empty:
        raise CrossmodalError(f"data.csv={settings.data.csv}: no row left to predict for")
    frame, embeddings = predictor.predict(table, "test", top_k=top_k, embeddings=settings.predict.embeddings)
    frame.to_csv(run_dir / "predictions.csv", index=False, float_format="%.6f")
    if embeddings is not None:
        np.savez(run_dir / "embeddings.npz", **embeddings)
    log.info("%d rows of %s predicted with %s; wrote %s%s", len(frame), settings.data.csv, settings.ckpt,
             run_dir / "predictions.csv", " and embeddings.npz" if embeddings is not None else "")
    return frame


@hydra.main(config_path=config_dir(), config_name="predict", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Console script `cmpredict`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    predict(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
