"""The tabular inputs of a batch as tensors: the dataset's side of the tabular encoder's input.

The dataset transforms a whole split once (`TabularPreprocessor.transform` -> `TabularArrays`) and keeps its
arrays; then
    tabular_row(arrays, i) -> {"numeric": float32 [Cn], "numeric_present": bool [Cn], "categorical": int64 [Cc]}
gives one row for `__getitem__`, `collate_tabular(items)` stacks those rows into [B, ...] tensors for the collate
function, and `tabular_rows(arrays, rows)` reads a whole batch with one indexed read per array (`__getitems__`).
Separate from `tabular.py` so that the preprocessing itself stays free of torch.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from crossmodal_cli.data.tabular import TabularArrays


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
