"""The tabular inputs of a batch as tensors: the dataset's side of the tabular encoder's input.

The pipeline transforms each split once (`TabularPreprocessor.transform` -> `TabularArrays`) and keeps the result
in the split's frame, one typed column per input column (`attach`: "tabular.numeric/C" float32,
"tabular.present/C" bool, "tabular.categorical/C" int64), so the values follow the rows wherever a frame is
filtered, reordered or deduplicated (on_missing=drop, cmpredict's order, the feature cache's distinct rows).
Then
    frame_arrays(frame) -> TabularArrays (numeric [N, Cn], numeric_present [N, Cn], categorical [N, Cc])
    tabular_row(arrays, i) -> {"numeric": float32 [Cn], "numeric_present": bool [Cn], "categorical": int64 [Cc]}
gives one row for `__getitem__`, `collate_tabular(items)` stacks those rows into [B, ...] tensors for the collate
function, and `tabular_rows(arrays, rows)` reads a whole batch with one indexed read per array (`__getitems__`).
Separate from `tabular.py` so that the preprocessing itself stays free of torch.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

import pandas as pd

from crossmodal_cli.data.tabular import TabularArrays, TabularPreprocessor

KINDS = {"numeric": "tabular.numeric/", "numeric_present": "tabular.present/", "categorical": "tabular.categorical/"}


def attach(frame: pd.DataFrame, arrays: TabularArrays, pre: TabularPreprocessor) -> pd.DataFrame:
    """`frame` with the split's tabular inputs as typed columns (module docstring), row-aligned with it."""
    names = {"numeric": pre.numeric_columns, "numeric_present": pre.numeric_columns,
             "categorical": pre.categorical_columns}
    columns = {f"{KINDS[kind]}{column}": values[:, j]
               for kind, values in arrays.inputs().items() for j, column in enumerate(names[kind])}
    return frame.drop(columns=[c for c in frame.columns if c.startswith(tuple(KINDS.values()))]).assign(**columns)


def frame_arrays(frame: pd.DataFrame) -> TabularArrays:
    """The tabular inputs `attach` put into `frame`, as arrays [N, C] (columns in the preprocessor's order)."""
    def stacked(kind: str, dtype) -> np.ndarray:
        columns = [c for c in frame.columns if str(c).startswith(KINDS[kind])]
        if not columns:
            return np.zeros((len(frame), 0), dtype)
        return np.ascontiguousarray(np.stack([frame[c].to_numpy(dtype) for c in columns], axis=1))

    return TabularArrays(numeric=stacked("numeric", np.float32), numeric_present=stacked("numeric_present", bool),
                         categorical=stacked("categorical", np.int64))


def tabular_row(arrays: TabularArrays, i: int) -> dict[str, torch.Tensor]:
    """Row i's tabular input: numeric float32 [Cn], numeric_present bool [Cn], categorical int64 [Cc]."""
    return {key: torch.from_numpy(np.array(value[i])) for key, value in arrays.inputs().items()}


def tabular_rows(arrays: TabularArrays, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """The rows `rows` (int [B]) at once: numeric float32 [B, Cn], numeric_present bool [B, Cn], categorical
    int64 [B, Cc]."""
    return {key: torch.from_numpy(value[rows]) for key, value in arrays.inputs().items()}


def collate_tabular(items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack per-row tabular inputs (`tabular_row`) into [B, ...] tensors, keeping their dtypes."""
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}
