"""One tabular column: reading its cells as numbers, and the numeric transforms and categorical vocabulary fitted
on the training split (`tabular.py` assembles them into the preprocessor).

Cells arrive as strings, as the CSV reader gives them; a blank cell (or None / NaN from a DataFrame) is missing.
A cell is a number when it is a plain decimal: an optional sign, digits with at most one decimal point, an
optional exponent ("12", "-0.5", "+3.", ".25", "1e-3"). Words that Python's float() also accepts ("nan", "inf",
"infinity", "1_000") are words here: a column holding them is categorical, so no NaN or infinity reaches a model.

Every fitted value is a Python float or str, so the state is plain JSON and `from_state` reproduces the transform
bit for bit (JSON writes floats by their shortest repr, which reads back exactly).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from statistics import NormalDist
from typing import Sequence

import numpy as np
import pandas as pd

TRANSFORMS = ("standard", "quantile", "log")
MISSING_ID, UNKNOWN_ID, FIRST_VALUE_ID = 0, 1, 2  # categorical ids: blank, outside the vocabulary, the vocabulary
MAX_QUANTILES = 1000  # reference points of the quantile transform (sklearn's default n_quantiles too)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def cell_text(value: object) -> str:
    """A cell as stripped text: '' for a blank, None or NaN cell (a DataFrame's missing value)."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return ""
    return str(value).strip()


def parse_number(text: str) -> float | None:
    """The finite float a plain decimal cell holds; None for any other text ('nan', 'inf', '1,000', 'n/a')."""
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def first_word(texts: Sequence[str]) -> int | None:
    """The position of the first non-blank cell that is not a number; None when every non-blank cell is one."""
    for i, text in enumerate(texts):
        if text and parse_number(text) is None:
            return i
    return None


def numbers(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(values float64 [N] with 0.0 where blank, present bool [N]); every non-blank cell must be a number
    (checked by the caller with `first_word`)."""
    present = np.fromiter((bool(t) for t in texts), dtype=bool, count=len(texts))
    values = np.fromiter((parse_number(t) if t else 0.0 for t in texts), dtype=np.float64, count=len(texts))
    return values, present


def signed_log(values: np.ndarray) -> np.ndarray:
    """sign(x) * log1p(|x|): compresses heavy tails (prices, counts) on both sides of zero, keeps 0 at 0."""
    return np.sign(values) * np.log1p(np.abs(values))


def fit_numeric(values: np.ndarray, transform: str) -> dict:
    """The fitted state of one numeric column from its present training values float64 [n] (n >= 2, at least two
    distinct values, so every std below is positive).

    standard: {"mean", "std"} of the values (population std).
    log:      {"mean", "std"} of signed_log(values); the values are log-compressed, then standardised.
    quantile: {"quantiles", "scores"}: the values at K = min(1000, n) evenly spaced levels p_k = k / (K - 1), and
              the normal score of each level, Phi^-1(p_k) with p_k clipped to [0.5/n, 1 - 0.5/n] so the extremes
              stay finite (about +-3.3 for n = 1000). Tied quantiles (a value repeated over several levels) are
              merged into one point with their mean score, so the points strictly increase and a repeated value
              always gets one score. A value maps to np.interp(x, quantiles, scores): normal scores, whatever
              the shape of the training distribution; values beyond the training range get the extreme scores.
              Written with numpy and the standard library's NormalDist, because scikit-learn (whose
              QuantileTransformer(output_distribution="normal") does the same, interpolating the levels
              instead of the scores) and scipy are no dependencies of the package, only of some dev tools.
    """
    if transform == "quantile":
        n = len(values)
        levels = np.linspace(0.0, 1.0, min(MAX_QUANTILES, n))
        points = np.quantile(values, levels)
        normal = NormalDist()
        scores = np.array([normal.inv_cdf(p) for p in np.clip(levels, 0.5 / n, 1 - 0.5 / n)])
        unique, which = np.unique(points, return_inverse=True)
        merged = np.bincount(which, weights=scores) / np.bincount(which)
        return {"transform": transform, "quantiles": unique.tolist(), "scores": merged.tolist()}
    shown = signed_log(values) if transform == "log" else values
    return {"transform": transform, "mean": float(shown.mean()), "std": float(shown.std())}


def apply_numeric(state: dict, values: np.ndarray) -> np.ndarray:
    """float64 [N] raw values -> float64 [N] transformed with a column's fitted `state` (see `fit_numeric`)."""
    if state["transform"] == "quantile":
        return np.interp(values, np.asarray(state["quantiles"]), np.asarray(state["scores"]))
    shown = signed_log(values) if state["transform"] == "log" else values
    return (shown - state["mean"]) / state["std"]


def vocabulary(texts: Sequence[str], min_count: int) -> tuple[list[str], Counter]:
    """(the values seen at least `min_count` times among the non-blank training cells, by count descending then
    value, so the ids do not depend on row order; the counts of every value). The i-th value gets id i + 2."""
    counts = Counter(t for t in texts if t)
    kept = sorted((v for v, c in counts.items() if c >= min_count), key=lambda v: (-counts[v], v))
    return kept, counts


def category_ids(vocab: Sequence[str], texts: Sequence[str]) -> tuple[np.ndarray, int]:
    """(int64 [N] ids: 0 blank, 1 outside the vocabulary, 2.. the vocabulary; how many cells got id 1)."""
    index = {v: i + FIRST_VALUE_ID for i, v in enumerate(vocab)}
    index[""] = MISSING_ID
    ids = np.fromiter((index.get(t, UNKNOWN_ID) for t in texts), dtype=np.int64, count=len(texts))
    return ids, int((ids == UNKNOWN_ID).sum())


def numeric_summary(values: np.ndarray, present: np.ndarray) -> dict:
    """The report of a numeric column's raw training values: min, max, mean, std (population) and missing count."""
    shown = values[present]
    return {"min": float(shown.min()), "max": float(shown.max()), "mean": float(shown.mean()),
            "std": float(shown.std()), "missing": int((~present).sum())}


def categorical_summary(vocab: Sequence[str], counts: Counter, texts: Sequence[str], top: int = 5) -> dict:
    """The report of a categorical column's training cells: categories kept, cells in the unknown bucket (values
    rarer than min_count), missing count and the `top` most frequent values with their counts."""
    kept = set(vocab)
    return {"categories": len(vocab), "unknown": sum(c for v, c in counts.items() if v not in kept),
            "missing": sum(1 for t in texts if not t), "top": [[v, counts[v]] for v in vocab[:top]]}


def column_texts(frame: pd.DataFrame, column: str) -> list[str]:
    """A frame's column as stripped cell texts ('' for blank)."""
    return [cell_text(v) for v in frame[column].tolist()]
