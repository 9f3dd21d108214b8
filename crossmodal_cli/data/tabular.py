"""Numbers and categories as a modality: the tabular preprocessing, fitted on the training split only.

    options = TabularOptions(columns=..., categorical=..., numeric=..., transform=..., transforms=..., min_count=...)
    pre = TabularPreprocessor.fit(train_frame, options, name)   types inferred, transforms and vocabularies fitted
    arrays = pre.transform(frame, name)                         any split -> TabularArrays (numpy), unknown counts
    pre.state() -> dict (JSON) / TabularPreprocessor.from_state(dict): the checkpoint's copy, same transform exactly
    pre.numeric_columns, pre.categorical_columns, pre.cardinalities: what the tabular encoder is built with
    pre.report() -> dict: per column its type and training statistics, for data_report.json

Frames hold the cells as strings (blank = missing), as the CSV reader gives them; error messages name the CSV
line of a cell from the frame's `source` and `line` columns (a Table's split frames) or, without them, from its
index (a frame straight from `read_csv`, indexed by line). A column is numeric when every non-blank training
cell is a plain decimal (`tabular_columns.parse_number`), categorical otherwise, unless data.tabular.numeric or
data.tabular.categorical says so. Column-level ids and transforms: see `tabular_columns.py`. Serialising the
columns into the text (data.tabular.as_text): `tabular_text.py`. Stacking into tensors: `tabular_batch.py`.
No torch here, so a torch-free runtime can use it too.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from crossmodal_cli.data.columns import list_columns
from crossmodal_cli.data.csvfile import printable, where as where_in
from crossmodal_cli.data.tabular_columns import (FIRST_VALUE_ID, TRANSFORMS, apply_numeric, categorical_summary,
                                                 category_ids, column_texts, first_word, fit_numeric, numbers,
                                                 numeric_summary, vocabulary)
from crossmodal_cli.errors import CrossmodalError

STATE_VERSION = 1
NUMERIC, CATEGORICAL = "numeric", "categorical"
BOOKKEEPING = ("source", "line", "root")  # columns a Table's frames add; never tabular columns


def _named(column: str) -> str:
    return f"'{printable(column, 60)}'"


@dataclass(frozen=True)
class TabularOptions:
    """data.tabular as plain values: the columns in order, the type overrides, the numeric transform for all
    numeric columns and per column (`transforms` {column: transform}), and `min_count` (categorical values rarer
    in the training split go to the unknown id)."""

    columns: Sequence[str]
    categorical: Sequence[str]
    numeric: Sequence[str]
    transform: str
    transforms: Mapping[str, str]
    min_count: int

    def check(self) -> None:
        """One line for each way the options contradict themselves (before any data is read)."""
        if not self.columns:
            raise CrossmodalError("data.columns.tabular is empty; name the CSV columns that hold numbers or categories")
        repeated = sorted({c for c in self.columns if list(self.columns).count(c) > 1})
        if repeated:
            raise CrossmodalError(f"data.columns.tabular names {_named(repeated[0])} more than once; list it once")
        both = [c for c in self.columns if c in self.categorical and c in self.numeric]
        if both:
            raise CrossmodalError(f"column {_named(both[0])} is in both data.tabular.categorical and "
                                  f"data.tabular.numeric; keep it in one")
        for key, names in (("categorical", self.categorical), ("numeric", self.numeric),
                           ("transforms", list(self.transforms))):
            stray = [c for c in names if c not in self.columns]
            if stray:
                raise CrossmodalError(f"data.tabular.{key} names {_named(stray[0])}, which is not in "
                                      f"data.columns.tabular; add it there or remove it from data.tabular.{key}")
        for key, value in (("transform", self.transform), *((f"transforms.{c}", t) for c, t in
                                                             self.transforms.items())):
            if value not in TRANSFORMS:
                raise CrossmodalError(f"data.tabular.{key}={value}: use {', '.join(TRANSFORMS)}")
        forced = [c for c in self.transforms if c in self.categorical]
        if forced:
            raise CrossmodalError(f"data.tabular.transforms names {_named(forced[0])}, a categorical column "
                                  f"(data.tabular.categorical); transforms apply to numeric columns only")
        if not isinstance(self.min_count, int) or self.min_count < 1:
            raise CrossmodalError(f"data.tabular.min_count={self.min_count}: use a whole number of 1 or more")


@dataclass(frozen=True)
class TabularSpec:
    """The columns as resolved on the training split: `columns` in order, `kinds` ("numeric" | "categorical") per
    column, `transforms` {numeric column: transform}, `min_count`."""

    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    transforms: Mapping[str, str]
    min_count: int

    @property
    def numeric_columns(self) -> list[str]:
        return [c for c, k in zip(self.columns, self.kinds) if k == NUMERIC]

    @property
    def categorical_columns(self) -> list[str]:
        return [c for c, k in zip(self.columns, self.kinds) if k == CATEGORICAL]


@dataclass
class TabularArrays:
    """One split's tabular inputs, row-aligned with its frame: `numeric` float32 [N, Cn] (0.0 where missing),
    `numeric_present` bool [N, Cn] (False where the cell was blank), `categorical` int64 [N, Cc] (0 blank,
    1 unknown, 2.. the vocabulary), and `unknown` {categorical column: cells mapped to id 1, i.e. values the
    training vocabulary lacks: unseen there or rarer than min_count}, for the caller to log (`describe_unknown`)."""

    numeric: np.ndarray
    numeric_present: np.ndarray
    categorical: np.ndarray
    unknown: dict[str, int] = field(default_factory=dict)

    def inputs(self) -> dict[str, np.ndarray]:
        """{"numeric", "numeric_present", "categorical"}: the tabular encoder's input, as arrays."""
        return {"numeric": self.numeric, "numeric_present": self.numeric_present, "categorical": self.categorical}

    def any_present(self) -> np.ndarray:
        """bool [N]: the row has at least one non-blank tabular cell."""
        return self.numeric_present.any(1) | (self.categorical != 0).any(1)


def describe_unknown(unknown: Mapping[str, int], split: str) -> list[str]:
    """Log lines for the categorical cells of a split outside the vocabulary, e.g. "val split: column 'brand': 3
    values not in the training vocabulary (unseen, or rarer than data.tabular.min_count) mapped to unknown"."""
    return [f"{split} split: column {_named(c)}: {n} value{'s' if n != 1 else ''} not in the training vocabulary "
            f"(unseen, or rarer than data.tabular.min_count) mapped to unknown" for c, n in unknown.items() if n]


def _origin(frame: pd.DataFrame, name: str, row: int) -> str:
    """'FILE: line 7' (or 'DataFrame row 5') of the frame's row at position `row`, for cell-level errors."""
    if "line" in frame.columns:
        source = str(frame["source"].iloc[row]) if "source" in frame.columns else name
        return f"{source}: {where_in(source, int(frame['line'].iloc[row]))}"
    return f"{name}: {where_in(name, int(frame.index[row]))}"


def _refuse_word(frame: pd.DataFrame, name: str, column: str, texts: list[str], why: str) -> None:
    """One line naming the first non-number cell of a numeric column, if any."""
    bad = first_word(texts)
    if bad is not None:
        raise CrossmodalError(f"{_origin(frame, name, bad)}: column {_named(column)} is numeric ({why}) but holds "
                              f"'{printable(texts[bad], 60)}'; fix the cell, or list the column in "
                              f"data.tabular.categorical")


def _refuse_constant(name: str, column: str, texts: list[str], values: np.ndarray | None) -> None:
    """One line when the column's non-blank training cells hold a single distinct value (compared as numbers for
    a numeric column, so "1" and "1.0" are one value): it tells the rows apart no better than its blanks do."""
    distinct = np.unique(values) if values is not None else sorted({t for t in texts if t})
    if len(distinct) == 1:
        shown = next(t for t in texts if t)
        raise CrossmodalError(f"{name}: column {_named(column)} holds the single value '{printable(shown, 60)}' in "
                              f"every non-blank cell of the training split, so it cannot help predict anything; "
                              f"remove it from data.columns.tabular")


def _require_columns(frame: pd.DataFrame, name: str, columns: Sequence[str], prefix: str = "") -> None:
    missing = [c for c in columns if prefix + c not in frame.columns]
    if missing:
        found = [c for c in frame.columns if c not in BOOKKEEPING]
        raise CrossmodalError(f"{name}: column{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(_named(c) for c in missing)} (data.columns.tabular) not found; "
                              f"{list_columns(found)}")


class TabularPreprocessor:
    """The fitted tabular preprocessing (module docstring); build it with `fit` or `from_state`."""

    def __init__(self, spec: TabularSpec, numeric: Mapping[str, dict], vocabularies: Mapping[str, list[str]],
                 summary: Mapping[str, dict]):
        self.spec = spec
        self.numeric = dict(numeric)            # {column: fitted transform state (tabular_columns.fit_numeric)}
        self.vocabularies = dict(vocabularies)  # {column: values in id order, the first with id 2}
        self.summary = dict(summary)            # {column: training statistics (report)}

    @classmethod
    def fit(cls, frame: pd.DataFrame, options: TabularOptions, name: str, prefix: str = "") -> TabularPreprocessor:
        """Resolve the column types and fit every transform and vocabulary on `frame`, the training split only
        (`name`: the CSV or DataFrame it came from, for messages; `prefix`: column C is read from frame column
        prefix + C, as a Table's frames hold it). One-line errors: a column not in the frame, a word in a numeric
        column, a column blank in every row, one with a single distinct value, one whose values are all rarer
        than min_count."""
        options.check()
        _require_columns(frame, name, options.columns, prefix)
        kinds, numeric, vocabularies, summary, transforms = [], {}, {}, {}, {}
        for column in options.columns:
            texts = column_texts(frame, prefix + column)
            if not any(texts):
                raise CrossmodalError(f"{name}: column {_named(column)} is blank in every row of the training split; "
                                      f"fill it, or remove it from data.columns.tabular")
            if column in options.numeric:
                _refuse_word(frame, name, column, texts, "listed in data.tabular.numeric")
            is_numeric = column not in options.categorical and first_word(texts) is None
            values, present = numbers(texts) if is_numeric else (None, None)
            _refuse_constant(name, column, texts, values[present] if is_numeric else None)
            if is_numeric:
                kinds.append(NUMERIC)
                transforms[column] = options.transforms.get(column, options.transform)
                numeric[column] = fit_numeric(values[present], transforms[column])
                summary[column] = numeric_summary(values, present)
            elif column in options.transforms:
                raise CrossmodalError(f"{name}: data.tabular.transforms names {_named(column)}, which holds words "
                                      f"in the training split and so is categorical; remove it from "
                                      f"data.tabular.transforms, or fix its cells")
            else:
                kinds.append(CATEGORICAL)
                vocab, counts = vocabulary(texts, options.min_count)
                if not vocab:
                    raise CrossmodalError(f"{name}: no value of column {_named(column)} occurs "
                                          f"data.tabular.min_count={options.min_count} times in the training split; "
                                          f"lower data.tabular.min_count, or remove the column")
                vocabularies[column] = vocab
                summary[column] = categorical_summary(vocab, counts, texts)
        spec = TabularSpec(columns=tuple(options.columns), kinds=tuple(kinds), transforms=transforms,
                           min_count=options.min_count)
        return cls(spec, numeric, vocabularies, summary)

    @property
    def numeric_columns(self) -> list[str]:
        return self.spec.numeric_columns

    @property
    def categorical_columns(self) -> list[str]:
        return self.spec.categorical_columns

    @property
    def cardinalities(self) -> list[int]:
        """Per categorical column, the rows its embedding needs: the vocabulary + the 2 reserved ids."""
        return [len(self.vocabularies[c]) + FIRST_VALUE_ID for c in self.categorical_columns]

    def transform(self, frame: pd.DataFrame, name: str, prefix: str = "") -> TabularArrays:
        """Any split's frame -> TabularArrays with the training split's fit; a word in a numeric column is a
        one-line error naming its line, a category outside the vocabulary is counted, never an error.
        `prefix`: as for `fit`."""
        _require_columns(frame, name, self.spec.columns, prefix)
        n = len(frame)
        numeric = np.zeros((n, len(self.numeric_columns)), np.float32)
        present = np.zeros((n, len(self.numeric_columns)), bool)
        for j, column in enumerate(self.numeric_columns):
            texts = column_texts(frame, prefix + column)
            _refuse_word(frame, name, column, texts, "so typed on the training split")
            values, present[:, j] = numbers(texts)
            numeric[:, j] = np.where(present[:, j], apply_numeric(self.numeric[column], values), 0.0)
        categorical = np.zeros((n, len(self.categorical_columns)), np.int64)
        unknown = {}
        for j, column in enumerate(self.categorical_columns):
            categorical[:, j], unknown[column] = category_ids(self.vocabularies[column],
                                                              column_texts(frame, prefix + column))
        return TabularArrays(numeric=numeric, numeric_present=present, categorical=categorical, unknown=unknown)

    def state(self) -> dict:
        """Everything the fit learned, as plain JSON values (for the checkpoint and an exported bundle)."""
        return copy.deepcopy({"version": STATE_VERSION, "columns": list(self.spec.columns),
                              "kinds": list(self.spec.kinds), "transforms": dict(self.spec.transforms),
                              "min_count": self.spec.min_count, "numeric": self.numeric,
                              "vocabularies": self.vocabularies, "summary": self.summary})

    @classmethod
    def from_state(cls, state: Mapping) -> TabularPreprocessor:
        """The preprocessor `state()` described: transforms exactly as the one that wrote it."""
        if state.get("version") != STATE_VERSION:
            raise CrossmodalError(f"tabular preprocessing state version {state.get('version')} is not "
                                  f"{STATE_VERSION}; use the crossmodal version that wrote the checkpoint")
        spec = TabularSpec(columns=tuple(state["columns"]), kinds=tuple(state["kinds"]),
                           transforms=dict(state["transforms"]), min_count=int(state["min_count"]))
        return cls(spec, *copy.deepcopy((state["numeric"], state["vocabularies"], state["summary"])))

    def report(self) -> dict:
        """{column: {"type", numeric: "transform", min, max, mean, std, missing | categorical: categories,
        unknown (training cells rarer than min_count), missing, top [[value, count], ...]}} for data_report.json."""
        return {c: {"type": k, **({"transform": self.spec.transforms[c]} if k == NUMERIC else {}),
                    **self.summary[c]} for c, k in zip(self.spec.columns, self.spec.kinds)}
