"""Where a table's rows come from: CSV files (`csvfile.py`) or in-memory pandas DataFrames, and which of them
provides which split.

Both become a `Source`: its rows as strings indexed by the line each starts on, as `read_csv` gives them. A
DataFrame (the Python API: `fit(df)`, `predict(df)`) goes through the same column matching, checks and errors as a
CSV: its cells become the strings a CSV of it would hold (blank for None / NaN), except in-memory image and audio
cells (`cells.py`), and a row's `line` is its position + 2, the line it would have in a CSV with a header. Its
relative paths resolve against data.root (the working directory when unset) and its rows are not confined to a
root: the caller is a program, not a CSV from elsewhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from crossmodal_cli.data.cells import MEMORY_TYPES
from crossmodal_cli.data.csvfile import FIRST_ROW_LINE, frame_source, printable, read_csv, refuse_repeated_columns
from crossmodal_cli.errors import CrossmodalError

ROLES = ("csv", "train", "val", "test")  # "csv": one table split by its split column or a seeded split
SETTINGS = {"csv": "data.csv", "train": "data.train_csv", "val": "data.val_csv", "test": "data.test_csv"}


@dataclass
class Source:
    """One CSV or DataFrame as read: its name in messages (the path as given, or "DataFrame" / "val DataFrame"),
    its rows, the `source` of its rows (the CSV's resolved path, or the name), the folder its relative paths
    resolve against when data.root is unset, and {data.columns key: header name} as found."""

    name: str
    frame: pd.DataFrame
    origin: str
    base: str
    in_memory: bool = False
    found: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "DataFrame" if self.in_memory else "CSV"


def plan_sources(paths: Mapping[str, str | None], frames: Mapping[str, pd.DataFrame] | None,
                 keep: Sequence[str]) -> dict[str, str | pd.DataFrame]:
    """Which CSV path or DataFrame provides which of the kept splits: {"csv": …} (the splits of one table) and/or
    {split: …}. With data.csv and data.test_csv, data.csv provides train and val, data.test_csv the test split.
    `paths` and `frames` are keyed by role (ROLES); a role may have a path or a frame, not both."""
    frames = dict(frames or {})
    unknown = [role for role in frames if role not in ROLES]
    if unknown:
        raise CrossmodalError(f"frames: unknown key{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(repr(printable(r, 30)) for r in unknown)}; use csv (one table to split), "
                              f"train, val or test")
    for role, frame in frames.items():
        if not isinstance(frame, pd.DataFrame):
            raise CrossmodalError(f"frames['{role}']: expected a pandas DataFrame, got {type(frame).__name__}")
    both = [role for role in frames if paths.get(role)]
    if both:
        raise CrossmodalError(f"{SETTINGS[both[0]]}={paths[both[0]]} and a {frame_source(both[0])} are both given; "
                              f"give one of them")
    given = {role: frames[role] if role in frames else (paths.get(role) or None) for role in ROLES}
    csv, train, val, test = (given[role] for role in ROLES)
    if csv is not None:
        wanted = {"csv": csv if test is None or set(keep) - {"test"} else None,
                  "test": test if "test" in keep else None}
        return {role: value for role, value in wanted.items() if value is not None}
    if train is None and "train" in keep:
        raise CrossmodalError("no data given: give a DataFrame as frames['csv'], or frames['train'] and "
                              "frames['val']" if frames else
                              "no data given: set data.csv=FILE.csv, or data.train_csv and data.val_csv")
    if val is None and "val" in keep:
        raise CrossmodalError("no validation DataFrame: give frames['val'], or one DataFrame as frames['csv'] with a "
                              "split column" if frames else
                              "data.val_csv is not set: give a validation CSV, or use data.csv with a split column")
    return {s: value for s, value in {"train": train, "val": val, "test": test}.items()
            if value is not None and s in keep}


def read_sources(plan: Mapping[str, str | pd.DataFrame], separator: str) -> dict[str, Source]:
    """{role: Source} for `plan_sources`'s result; a CSV named for two roles is read once."""
    read: dict[object, Source] = {}
    sources = {}
    for role, value in plan.items():
        key = ("frame", id(value)) if isinstance(value, pd.DataFrame) else value
        if key not in read:
            read[key] = (_read_frame(value, frame_source(role)) if isinstance(value, pd.DataFrame)
                         else _read_csv(value, separator))
        sources[role] = read[key]
    return sources


def _read_csv(path: str, separator: str) -> Source:
    frame = read_csv(path, separator)
    return Source(name=str(Path(path)), frame=frame, origin=str(Path(path).resolve()),
                  base=str(Path(path).resolve().parent))


def _read_frame(frame: pd.DataFrame, name: str) -> Source:
    """A DataFrame as a Source: its cells as `read_csv` gives a CSV's (`cell_text`), indexed by line."""
    header = [str(column).strip() for column in frame.columns]
    if not len(frame) or not header:
        raise CrossmodalError(f"{name}: the DataFrame has no {'rows' if header else 'columns'}")
    refuse_repeated_columns(header, name, "DataFrame's columns")
    cells = {column: [cell_text(v) for v in frame.iloc[:, i].tolist()] for i, column in enumerate(header) if column}
    lines = pd.Index(range(FIRST_ROW_LINE, len(frame) + FIRST_ROW_LINE), name="line")
    return Source(name=name, frame=pd.DataFrame(cells, index=lines, dtype=object), origin=name, base=os.getcwd(),
                  in_memory=True)


def cell_text(value: object) -> object:
    """A DataFrame cell as a CSV of it would hold it: text as it is, blank for None / NaN / NA, a path-like as its
    path, other values as `str()` writes them; in-memory image and audio cells (bytes, PIL images) stay as they are."""
    if isinstance(value, (str, *MEMORY_TYPES)):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, os.PathLike):
        return os.fsdecode(value)
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        return ""
    return str(value)
