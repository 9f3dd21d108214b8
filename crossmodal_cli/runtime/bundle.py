"""An exported bundle loaded for prediction: `load_bundle(DIR).predict(rows)`, with onnxruntime and no torch.

`rows`: a pandas DataFrame, a list of {column: value} dicts, or a CSV path, with the checkpoint's input column names
(bundle.json "columns"); an image or audio cell is a path (relative to `root`, default the CSV's folder or the
working directory), encoded bytes, or (images) a PIL image. The result has cmpredict's columns: row, source, line (the
CSV line, or the DataFrame position + 2, as cmpredict counts), the inputs as given, then the task's columns
(predicted, prob_CLASS, …).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crossmodal_cli.data.cells import describe_cell, in_memory
from crossmodal_cli.data.csvfile import FIRST_ROW_LINE, read_csv
from crossmodal_cli.data.tabular_text import tabular_texts, with_tabular_text
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.runtime.decode import prediction_frame, unit
from crossmodal_cli.runtime.inputs import Inputs, load_tokenizer

ON_MISSING = ("error", "drop", "zero")


class Bundle:
    """A bundle folder (cmexport's output): bundle.json, model.onnx, tokenizer.json, card.json."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        self.folder = Path(folder)
        if not (self.folder / "bundle.json").is_file():
            raise CrossmodalError(f"{self.folder}: not an exported bundle (no bundle.json); make one with "
                                  f"cmexport ckpt=PATH out={self.folder}")
        self.spec = json.loads((self.folder / "bundle.json").read_text())
        self.card = json.loads((self.folder / "card.json").read_text()) if (self.folder / "card.json").is_file() \
            else {}
        tokenizer = load_tokenizer(str(self.folder / self.spec["text"]["tokenizer"]), self.spec["text"]) \
            if "text" in self.spec["modalities"] else None
        self.inputs = Inputs(self.spec, tokenizer)
        self.written = list(self.spec.get("text", {}).get("tabular_columns", []))  # data.tabular.as_text
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.folder / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])

    @property
    def columns(self) -> dict[str, str | list[str]]:
        """{modality: the input column it reads (tabular: the list of its columns)}; a text made only of tabular
        columns (data.tabular.as_text without a text column) has none."""
        return {m: self.spec["columns"][m] for m in self.spec["modalities"] if m in self.spec["columns"]}

    @property
    def input_columns(self) -> dict[str, str]:
        """{column: how it is read}: "image", "audio", "text" (a string) or "value" (a tabular column, or one
        written into the text: a number or a category), every column a row must have."""
        kinds = {}
        for modality, column in self.columns.items():
            kinds.update({c: "value" for c in column} if modality == "tabular" else {column: modality})
        kinds.update({c: "value" for c in self.written})
        return kinds

    def describe(self, modality: str) -> str:
        """The column(s) a modality reads, for messages."""
        column = self.columns.get(modality, [])
        return ", ".join([*(column if isinstance(column, list) else [column]),
                          *(self.written if modality == "text" else [])])

    def frame(self, rows: Any, root: str | None = None) -> tuple[pd.DataFrame, str | None, str]:
        """rows as a DataFrame of the input columns, the folder relative paths resolve against, and where the rows
        come from (the CSV's path, or "DataFrame")."""
        if isinstance(rows, (str, os.PathLike)):  # the toolkit's reader: rows indexed by their CSV line
            path = Path(rows)
            return read_csv(path), root or str(path.parent.resolve()), str(path.resolve())
        if not isinstance(rows, (list, pd.DataFrame)):
            raise CrossmodalError(f"rows: expected a CSV path, a pandas DataFrame or a list of {{column: value}} "
                                  f"dicts, got {type(rows).__name__}")
        frame = pd.DataFrame(list(rows)) if isinstance(rows, list) else rows.copy()
        frame.index = np.arange(len(frame)) + FIRST_ROW_LINE  # as cmpredict numbers the rows of a DataFrame
        return frame, root, "DataFrame"

    def arrays(self, frame: pd.DataFrame, root: str | None, on_missing: str,
               source: str = "rows") -> tuple[dict, np.ndarray, dict]:
        """The model's input arrays for `frame`, which rows are kept, and why a row's modality is missing
        (`source`: where the rows come from, for a tabular cell's error)."""
        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise CrossmodalError(f"input column{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing; the "
                                  f"bundle reads {', '.join(self.input_columns)} (found: "
                                  f"{', '.join(map(str, frame.columns)) or 'none'})")
        feed, usable, reasons = {}, {}, {}
        for modality in self.spec["modalities"]:
            column = self.columns.get(modality)
            if modality == "tabular":
                values, ok, why = self.inputs.tabular(frame[column], source)
            elif modality == "text":
                cells = frame[column].tolist() if column is not None else None
                values, ok, why = self.inputs.text(with_tabular_text(cells, tabular_texts(frame, self.written))
                                                   if self.written else cells)
            else:
                values, ok, why = getattr(self.inputs, modality)([_resolved(c, root) for c in frame[column].tolist()])
            feed.update(values if modality in ("text", "tabular") else {modality: values})
            usable[modality], reasons[modality] = ok, why
        keep = np.ones(len(frame), bool)
        for modality, ok in usable.items():
            bad = np.flatnonzero(~ok)
            if len(bad) and on_missing == "error":
                line, why = frame.index[bad[0]], reasons[modality][bad[0]]
                raise CrossmodalError(f"row at line {line}: {why} in column {self.describe(modality)} ({len(bad)} "
                                      f"row(s) in all); pass on_missing='zero' to mask it or 'drop' to skip the row")
            if on_missing == "drop":
                keep &= ok
        for modality, ok in usable.items():
            feed[f"has_{modality}"] = ok
        all_missing = ~np.any(np.stack(list(usable.values())), axis=0)
        keep &= ~all_missing  # a row with no usable input at all is never predicted
        return feed, keep, reasons

    def run(self, feed: dict[str, np.ndarray], keep: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
        """The ONNX model's outputs for the kept rows, in batches."""
        names = [i.name for i in self.session.get_inputs()]
        rows = np.flatnonzero(keep)
        parts: dict[str, list] = {}
        for start in range(0, len(rows), batch_size):
            pick = rows[start:start + batch_size]
            batch = {n: feed[n][pick] for n in names}
            for output, value in zip(self.session.get_outputs(), self.session.run(None, batch)):
                parts.setdefault(output.name, []).append(value)
        return {k: np.concatenate(v) for k, v in parts.items()}

    def outputs(self, rows: Any, root: str | None, on_missing: str | None, batch_size: int):
        on_missing = on_missing or self.spec.get("on_missing", "error")
        if on_missing not in ON_MISSING:
            raise CrossmodalError(f"on_missing={on_missing!r}: use error, drop or zero")
        frame, root, source = self.frame(rows, root)
        feed, keep, _ = self.arrays(frame, root, on_missing, source)
        if not keep.any():
            raise CrossmodalError("no row has a usable input to predict from")
        return frame, keep, self.run(feed, keep, batch_size), root, source

    def predict(self, rows: Any, *, root: str | None = None, on_missing: str | None = None,
                batch_size: int = 64) -> pd.DataFrame:
        """cmpredict's table for `rows`: row, line, then the task's prediction columns."""
        frame, keep, outputs, root, source = self.outputs(rows, root, on_missing, batch_size)
        lines = frame.index.to_numpy()[keep]
        kept = frame[keep]
        where = {"row": np.arange(len(kept)), "source": source, "line": lines}
        where.update({m: [describe_cell(v) if in_memory(v) else v if m == "text" else _resolved(v, root)
                          for v in kept[c]] for m, c in self.columns.items() if m != "tabular"})
        where.update({c: kept[c].tolist() for c, kind in self.input_columns.items()  # tabular cells as given
                      if kind == "value" and c not in where})
        return pd.concat([pd.DataFrame(where), prediction_frame(self.spec["task"], outputs, lines)], axis=1)

    def embed(self, rows: Any, *, root: str | None = None, on_missing: str | None = None,
              batch_size: int = 64) -> dict[str, np.ndarray]:
        """Retrieval bundles: each row's unit-length image and text embeddings ({"line", "image", "text"})."""
        if self.spec["task"]["kind"] != "retrieval":
            raise CrossmodalError(f"embed() needs a retrieval bundle; this one predicts {self.spec['task']['kind']}")
        frame, keep, outputs, _, _ = self.outputs(rows, root, on_missing, batch_size)
        values = unit(outputs["outputs"].astype(np.float32))
        return {"line": frame.index.to_numpy()[keep], "image": values[:, 0], "text": values[:, 1]}


def _resolved(cell: Any, root: str | None) -> Any:
    """A relative path against `root` (else as it is); bytes, PIL images and blanks unchanged."""
    if isinstance(cell, str) and cell.strip() and root and not os.path.isabs(cell):
        return os.path.realpath(os.path.join(root, cell))
    return cell


def load_bundle(folder: str | os.PathLike, threads: int | None = None) -> Bundle:
    """The bundle in `folder`, ready to predict (`threads`: onnxruntime's intra-op threads; None = its default)."""
    return Bundle(folder, threads)
