"""Stacking per-row targets into a batch: the data pipeline's side of the task contract.

A task puts one value per row into a split frame's `target` column (an int class index, a float, a NumPy vector,
or a dict of those, one per head); the loaders stack a batch's values with `collate_targets`. It lives here, not
with the tasks, because the datasets call it and data/ knows no tasks.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch


def collate_targets(values: list) -> torch.Tensor | dict[str, torch.Tensor]:
    """Stack the per-row targets of a batch: ints -> int64 [B], floats -> float32 [B], vectors -> [B, K], dicts
    (one target per head) -> a dict of those."""
    if isinstance(values[0], Mapping):
        return {key: collate_targets([v[key] for v in values]) for key in values[0]}
    array = np.stack([np.asarray(v) for v in values])
    if array.dtype.kind == "f":
        array = array.astype(np.float32, copy=False)
    return torch.from_numpy(array)
