"""K-fold cross-validation: `data.folds=K data.fold=I` validates on the I-th of K folds of the non-test rows.

The train and val rows the usual split gives (a split column, data.train_csv + data.val_csv, or the seeded split of
one CSV) are pooled and dealt into K folds, stratified as the task stratifies (each class spread evenly over the
folds), seeded by the run's seed; the test split is untouched. `cmtrain -m data.folds=5 data.fold=0,1,2,3,4` runs the
whole cross-validation and `cmsweep` groups the folds like seeds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from crossmodal_cli.errors import CrossmodalError


def fold_numbers(strata: pd.Series | None, rows: int, folds: int, seed: int) -> np.ndarray:
    """Each row's fold (0..folds-1): within every stratum the rows are shuffled (seeded) and dealt round-robin,
    continuing where the previous stratum stopped, so the folds differ in size by at most one row."""
    keys = pd.Series(strata.to_numpy() if strata is not None else np.zeros(rows, dtype=int), dtype=object)
    rng = np.random.default_rng(seed)
    numbers = np.empty(rows, dtype=int)
    start = 0
    for key in pd.unique(keys.sort_values(kind="stable")):
        members = rng.permutation(np.flatnonzero((keys == key).to_numpy()))
        numbers[members] = (start + np.arange(len(members))) % folds
        start = (start + len(members)) % folds
    return numbers


def fold_splits(train: pd.DataFrame, val: pd.DataFrame, folds: int, fold: int, seed: int,
                strata=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, val) of fold `fold`: the pooled train and val rows, fold `fold` of them validating. `strata`: the
    task's strata function (frame -> values per row), or None for a plain seeded deal."""
    pooled = pd.concat([train, val]).sort_values(["source", "line"], kind="stable").reset_index(drop=True)
    if len(pooled) < folds:
        raise CrossmodalError(f"data.folds={folds}: only {len(pooled)} train and val rows; use fewer folds")
    numbers = fold_numbers(strata(pooled) if strata is not None else None, len(pooled), folds, seed)
    return pooled[numbers != fold], pooled[numbers == fold]
