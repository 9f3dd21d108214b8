"""A trained checkpoint applied to rows: its predictions, its metrics, its embeddings. The core of cmeval,
cmpredict and the Python API's `load(...)`: the model, tokenizer, task and input settings come from the checkpoint
alone (`factory.rebuild`); the rows are read with the checkpoint's data settings and the caller's overrides.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from crossmodal_cli.data.cells import describe_cell, in_memory
from crossmodal_cli.data.dataset import resolve_workers
from crossmodal_cli.data.columns import TABULAR
from crossmodal_cli.data.table import MODALITIES, Table
from crossmodal_cli.engine.evaluation import concat, to_device
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.engine.runtime import autocast, resolve_device, resolve_precision, seed_everything
from crossmodal_cli.factory import Rebuilt
from crossmodal_cli.fusion import Fused
from crossmodal_cli.pipeline.data import load_data
from crossmodal_cli.pipeline.loaders import make_split_loader
from crossmodal_cli.settings.run import DataSettings


@dataclass
class Predictor:
    """A rebuilt checkpoint placed on a device, with the loader settings its passes use."""

    rebuilt: Rebuilt
    device: torch.device
    precision: str
    batch_size: int
    num_workers: int

    @classmethod
    def place(cls, rebuilt: Rebuilt, device: str = "auto", precision: str = "auto", batch_size: int | None = None,
              num_workers: int | str = 0) -> "Predictor":
        """The checkpoint's model on `device` (auto: a GPU when there is one) in eval mode."""
        where = resolve_device(device)
        rebuilt.model.to(where).eval()
        return cls(rebuilt, where, resolve_precision(precision, where),
                   batch_size or rebuilt.config.trainer.batch_size, resolve_workers(num_workers))

    def read(self, data: DataSettings, keep: Sequence[str], labels_needed: bool = True,
             frames: dict[str, pd.DataFrame] | None = None) -> Table:
        """Rows read and checked with `data` (the checkpoint's data settings, with the caller's changes)."""
        stored = self.rebuilt.config
        seed_everything(stored.seed)
        return load_data(data, stored.modalities or self.rebuilt.modalities, stored.seed, self.rebuilt.task,
                         keep=keep, labels_needed=labels_needed, frames=frames, tabular=self.rebuilt.tabular)

    def loader(self, table: Table, split: str):
        stored = self.rebuilt.config
        return make_split_loader(table, split, stored, self.rebuilt.tokenizer, batch_size=self.batch_size,
                                 train=False, seed=stored.seed, num_workers=self.num_workers,
                                 pin_memory=self.device.type == "cuda")

    @torch.no_grad()
    def run(self, loader, keep_embeddings: bool = False):
        """(row numbers, the task's outputs, {"fused", "pooled/MODALITY", the task's own: arrays} or None)."""
        model, task = self.rebuilt.model, self.rebuilt.task
        rows, values, kept = [], [], {}
        for batch in loader:
            batch = to_device(batch, self.device)
            with autocast(self.device, self.precision):
                encoded = model.encode(batch["inputs"])
                fused = model.fuse(encoded, batch.get("present"))
                out = model.head_outputs(fused)
            values.append(to_device(task.outputs(out), torch.device("cpu")))
            rows.append(batch["index"].cpu())
            if keep_embeddings:
                found = {"fused": _plain(fused), **{f"pooled/{m}": e.pooled for m, e in encoded.items()},
                         **task.embeddings(out)}
                for key, value in found.items():
                    kept.setdefault(key, []).append(value.float().cpu())
        embeddings = {k: torch.cat(v).numpy() for k, v in kept.items()} if keep_embeddings else None
        return torch.cat(rows).numpy(), concat(values), embeddings

    def predict(self, table: Table, split: str, top_k: int = 0,
                embeddings: bool = False) -> tuple[pd.DataFrame, dict[str, np.ndarray] | None]:
        """predictions.csv's table for one split (row, source, line, the inputs, the task's columns, and with
        `top_k` the K most probable labels) and, with `embeddings`, what embeddings.npz holds."""
        task = self.rebuilt.task
        rows, values, found = self.run(self.loader(table, split), embeddings)
        ordered = table.splits[split].iloc[rows].reset_index(drop=True)
        frame = prediction_table(rows, ordered, task.predictions(values, ordered))
        if top_k:
            frame = pd.concat([frame, task.top_k(values, top_k)], axis=1)
        if found is not None:
            found = {"row": rows, **found}
        return frame, found


def _plain(fused: Any) -> torch.Tensor:
    """The fused features as one tensor [B, D]: a fusion's output (its `features` when it is a `Fused`), or, for a
    model without fusion (retrieval), its {modality: pooled [B, D_m]} concatenated in sorted modality order."""
    if isinstance(fused, dict):
        return torch.cat([fused[k].float() for k in sorted(fused)], dim=-1)
    return fused.features if isinstance(fused, Fused) else fused


def prediction_table(indices, rows: pd.DataFrame, task_columns: pd.DataFrame) -> pd.DataFrame:
    """predictions.csv: row (in the split), source CSV and its line (the row's id), the inputs (paths, text, the
    tabular columns under their own names unless one is taken) as the CSV gave them, then the task's columns
    (label, prediction, probabilities, ...)."""
    inputs = {m: np.array([describe_cell(v) if in_memory(v) else v for v in rows[m]], dtype=object)
              for m in MODALITIES if m in rows and m != "tabular"}  # in-memory media as e.g. '<1,234 bytes>'
    reserved = {"row", "source", "line", *inputs, *task_columns.columns}
    inputs.update({c[len(TABULAR):]: rows[c].to_numpy() for c in rows.columns  # tabular cells, under their names
                   if str(c).startswith(TABULAR) and c[len(TABULAR):] not in reserved})

    where = pd.DataFrame({"row": indices, "source": rows["source"].to_numpy(), "line": rows["line"].to_numpy(),
                          **inputs})
    return pd.concat([where, task_columns], axis=1)


def with_columns(data: DataSettings, columns: Any) -> DataSettings:
    """`data` with the names of data.columns the caller set (a settings group or mapping; None keeps all)."""
    given = dataclasses.asdict(columns) if dataclasses.is_dataclass(columns) else dict(columns or {})
    names = {key: name for key, name in given.items() if name is not None}
    return dataclasses.replace(data, columns=dataclasses.replace(data.columns, **names)) if names else data


def evaluate_split(predictor: Predictor, table: Table, split: str, progress_bar: bool = False):
    """(the task's full metrics, every row's outputs, the loader) for one split: the numbers cmeval reports."""
    from crossmodal_cli.engine.evaluation import evaluate

    loader = predictor.loader(table, split)
    metrics, outputs = evaluate(predictor.rebuilt.model, loader, predictor.rebuilt.task, predictor.device,
                                predictor.precision, keep_outputs=True, desc=split, progress_bar=progress_bar,
                                full=True)
    return metrics, outputs, loader


def check_top_k(task, top_k: int, target: str) -> None:
    """predict.top_k needs a task with labels to rank (`Task.ranked_labels`), and no more of them than it has."""
    if not top_k:
        return
    labels = task.ranked_labels()
    if labels is None:
        raise CrossmodalError(f"predict.top_k={top_k}: only a classification checkpoint has labels to rank "
                              f"(this one: {target})")
    if top_k > len(labels):
        raise CrossmodalError(f"predict.top_k={top_k}: the checkpoint has {len(labels)} classes")


def one_source(data: DataSettings, test_csv: str | Path | None, root: str | Path | None,
               **changes: Any) -> DataSettings:
    """`data` reading a single source as the test split, in its order: `test_csv` (None: a DataFrame given in
    memory), relative paths against `root` (None: the CSV's folder; the working directory for a DataFrame). What
    cmeval data.test_csv=, cmpredict and the Python API read."""
    def absolute(path: str | Path | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else None

    return dataclasses.replace(data, csv=None, train_csv=None, val_csv=None, demo=None, test_csv=absolute(test_csv),
                               root=absolute(root), **changes)


def rows_for(predictor: Predictor, data: Any, *, labels_needed: bool, columns: Any = None, root: str | None = None,
             on_missing: str | None = None) -> Table:
    """The rows of a DataFrame (read in memory) or a CSV path as the checkpoint reads them, in one split "test":
    the Python API's input. `columns` maps data.columns keys to other names; `root` is what relative paths resolve
    against (default: the working directory for a DataFrame, the CSV's folder for a CSV)."""
    changes = {"on_missing": on_missing} if on_missing is not None else {}
    frames, csv = None, None
    if isinstance(data, pd.DataFrame):
        frames = {"test": data}
    elif isinstance(data, (str, Path)):
        csv = Path(data).expanduser()
        if not csv.is_file():
            raise CrossmodalError(f"{data}: CSV file not found")
    else:
        raise CrossmodalError(f"expected a pandas DataFrame or a CSV path, got {type(data).__name__}")
    settings = one_source(with_columns(predictor.rebuilt.config.data, columns), csv, root, **changes)
    table = predictor.read(settings, keep=["test"], labels_needed=labels_needed, frames=frames)
    if table.splits["test"].empty:
        raise CrossmodalError(f"{'the DataFrame' if frames else data}: no row left to predict for")
    return table
