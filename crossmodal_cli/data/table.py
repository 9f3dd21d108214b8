"""The table contract: read one CSV or DataFrame (or one per split), check columns and labels, split.

The result is a `Table`: one pandas frame per split with canonical columns, whatever the user's column names were:
`image`, `audio` (absolute paths, symlinks and `..` resolved; or in-memory cells of a DataFrame: `cells.py`),
`text`, the label column(s) as written (`label`, or those the task names), `source` (the CSV file, or "DataFrame"),
`line` (the line in that file where the row starts, header = line 1; a DataFrame row's position + 2) for error
messages, and `root` (the resolved data root the paths must stay under, checked in `validation.py`; blank for a
DataFrame's rows, which may point anywhere).

The table knows no tasks: which label columns to read, how to refuse labels before a split and what a seeded
split keeps in proportion arrive as plain values (`LabelColumns`); targets are made by the caller
(`crossmodal_cli.pipeline.labels`). File checks live in `validation.py`, column matching in `columns.py`, reading
CSVs and DataFrames in `sources.py`.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from crossmodal_cli.data.cells import in_memory
from crossmodal_cli.data.columns import (MODALITIES, TABULAR, choose_modalities, match_columns, modality_keys,
                                        require, tabular_keys)
from crossmodal_cli.data.csvfile import check_separator, describe_rows, frame_source, printable, resolve_paths
from crossmodal_cli.data.sources import Source, plan_sources, read_sources
from crossmodal_cli.data.folds import fold_splits
from crossmodal_cli.data.tabular import TabularPreprocessor
from crossmodal_cli.data.tabular_text import tabular_texts, with_tabular_text
from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)

ON_MISSING = ("error", "drop", "zero")
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}
__all__ = ["MODALITIES", "ON_MISSING", "SPLITS", "LabelColumns", "Table", "check_on_missing", "load_table",
           "stratified_split"]


@dataclass(frozen=True)
class LabelColumns:
    """The label side of a table, as plain values: `columns` {canonical column: configured header} to read (and
    require), `check(frame, name, headers)` refusing in one line labels that can never be used (before a split;
    `name` is the CSV path or DataFrame name), `strata(frame)` what a seeded split keeps in proportion (None: a
    plain random split)."""

    columns: Mapping[str, str]
    check: Callable[[pd.DataFrame, str, Mapping[str, str]], None] | None = None
    strata: Callable[[pd.DataFrame], pd.Series | None] | None = None


@dataclass
class Table:
    """Per-split frames with canonical columns, the modalities in use, and the label headers as found."""

    splits: dict[str, pd.DataFrame]
    modalities: list[str]
    report: dict = field(default_factory=dict)  # rows with unusable inputs per split and modality (validation.py)
    columns: dict[str, str] = field(default_factory=dict)  # data.columns key -> header name (first source) as found
    headers: dict[str, str] = field(default_factory=dict)  # canonical label column -> header (first source) as found
    tabular: TabularPreprocessor | None = None  # the tabular preprocessing its frames were transformed with
    read: list[str] = field(default_factory=list)  # the modalities whose columns were read: `modalities`, except
    # that with data.tabular.as_text "tabular" was read and became (part of) "text"


def check_on_missing(on_missing: str) -> None:
    """A one-line error for a data.on_missing value that is not error, drop or zero."""
    if on_missing not in ON_MISSING:
        raise CrossmodalError(f"data.on_missing={on_missing}: use {', '.join(ON_MISSING)}")


def _stripped(source: Source, key: str) -> np.ndarray:
    """A column's cells with surrounding blanks removed; in-memory cells of a DataFrame stay as they are (and are
    refused outside the image and audio columns)."""
    column = source.frame[source.found[key]]
    if source.in_memory:
        held = column.map(in_memory).to_numpy(bool)
        if held.any() and key not in ("image", "audio"):
            rows = pd.DataFrame({"source": source.origin, "line": column.index[held]})
            raise CrossmodalError(f"{source.name}: column '{printable(source.found[key], 60)}' holds bytes or an "
                                  f"image in {describe_rows(rows)}; only image and audio cells may be in memory")
        if held.any():
            cells = np.empty(len(column), dtype=object)  # filled one by one: a PIL image is never unpacked
            for i, value in enumerate(column.tolist()):
                cells[i] = value if held[i] else value.strip()
            return cells
    return column.str.strip().to_numpy()


def _resolved(cells: list, root: str) -> list:
    """Each path cell resolved against `root` (`resolve_paths`); in-memory cells as they are."""
    paths = [cell for cell in cells if isinstance(cell, str)]
    if len(paths) == len(cells):
        return resolve_paths(cells, root)
    resolved = iter(resolve_paths(paths, root))
    return [next(resolved) if isinstance(cell, str) else cell for cell in cells]


def _canonical(source: Source, modalities: Sequence[str], root: str | None, labels: Sequence[str]) -> pd.DataFrame:
    """Rename the user's columns to canonical names, strip cells, resolve paths against root. A tabular column C
    becomes "tabular/C" (its cells as text); column "tabular" then holds each row's cells as one JSON list, the
    row's tabular identity (feature cache) and blank check (validation.py)."""
    frame, found = source.frame, source.found
    keys = [key for m in modalities for key in modality_keys(m, found)]
    out = pd.DataFrame({key: _stripped(source, key) for key in (*labels, *keys)})
    if "tabular" in modalities:
        cells = out[[key for key in keys if key.startswith(TABULAR)]].to_numpy(str)
        out["tabular"] = [json.dumps(row.tolist(), ensure_ascii=False) for row in cells]
    out["source"] = source.origin
    out["line"] = frame.index.to_numpy()
    if "split" in found:
        out["split"] = pd.Series(_stripped(source, "split"), dtype=object).str.lower().to_numpy()
    real_root = os.path.realpath(root or source.base)
    for modality in ("image", "audio"):
        if modality in out:
            out[modality] = _resolved(out[modality].tolist(), real_root)
    out["root"] = "" if source.in_memory else real_root
    return out


def _split_by_column(frame: pd.DataFrame, path: str, column: str) -> dict[str, pd.DataFrame]:
    names = frame["split"].map(SPLIT_ALIASES)
    bad = frame[names.isna()]
    if len(bad):
        raise CrossmodalError(f"{path}: column '{printable(column, 60)}' has values other than train/val/test in "
                              f"{describe_rows(bad)} (e.g. '{printable(bad['split'].iloc[0], 60)}')")
    return {s: frame[names == s].drop(columns="split") for s in SPLITS}


def stratified_split(frame: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int,
                     strata: pd.Series | None | str = "label") -> dict[str, pd.DataFrame]:
    """Seeded split that keeps each stratum's proportion in every split and at least one row per stratum in train.
    `strata`: a column name or values per row (the task's: the label for classification); None = one stratum,
    a plain seeded random split."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise CrossmodalError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be in "
                              f"[0, 1) and sum to less than 1")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    keys = frame[strata] if isinstance(strata, str) else strata if strata is not None else \
        pd.Series(0, index=frame.index)
    for _, group in frame.groupby(keys, sort=True):
        idx = rng.permutation(group.index.to_numpy())
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        n_val = min(n_val, max(len(idx) - n_test - 1, 0))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    return {s: frame.loc[np.sort(np.concatenate(parts[s]))] for s in SPLITS}


def _split_one_csv(frame: pd.DataFrame, source: Source, val_fraction: float, test_fraction: float, seed: int,
                   test: tuple[str, str] | None, labels: LabelColumns | None) -> dict[str, pd.DataFrame]:
    """The splits of data.csv (or of the one DataFrame): its split column, else a seeded stratified split; with a
    test source (`test`: how messages name it and its setting, e.g. ('data.test_csv=PATH', 'data.test_csv')), no
    test rows."""
    if "split" in frame:
        splits = _split_by_column(frame, source.name, source.found["split"])
        if test and len(splits["test"]):
            raise CrossmodalError(f"{source.name}: column '{printable(source.found['split'], 60)}' puts "
                                  f"{describe_rows(splits['test'])} in the test split, and {test[0]} "
                                  f"is set too, so the test split is ambiguous; remove one of them (the test rows "
                                  f"or {test[1]})")
        how = f"its column '{printable(source.found['split'], 60)}'"
    else:
        strata = labels.strata(frame) if labels is not None and labels.strata is not None else None
        splits = stratified_split(frame, val_fraction, 0.0 if test else test_fraction, seed, strata)
        how = f"a seeded {'stratified' if strata is not None else 'random'} split (data.test_fraction unused)"
    if test:
        log.info("test split: %s; train and val: %s, by %s", test[0],
                 f"the {source.name}" if source.in_memory else f"data.csv={source.name}", how)
    return splits


def load_table(*, csv: str | None = None, train_csv: str | None = None, val_csv: str | None = None,
               test_csv: str | None = None, frames: Mapping[str, pd.DataFrame] | None = None, root: str | None = None,
               columns: Mapping[str, str], modalities: Sequence[str] | None, val_fraction: float,
               test_fraction: float, seed: int, labels: LabelColumns | None, keep: Sequence[str] = SPLITS,
               on_missing: str = "error", explicit: Collection[str] = (), separator: str = "auto",
               folds: tuple[int, int] | None = None, tabular_as_text: bool = False) -> Table:
    """Read and check the CSV(s) or DataFrame(s) and return a Table of the splits in `keep`.

    `frames` ({"csv": one table to split} and/or {split: table}) gives DataFrames in place of the CSV paths.
    `modalities=None` selects every modality whose column exists. `explicit` holds the data.columns keys the user
    set (they must exist as written; other names may differ in case). `separator`: see `read_csv`. `labels`: the
    label column(s) to read and require, refused per file before the split, and the strata of a seeded split;
    None (cmpredict) reads and requires no label column. The label columns are kept as written: targets are the
    caller's (`pipeline.labels.read_labelled`). `folds` (K, I): validate on fold I of K (data/folds.py).
    `columns["tabular"]` lists the tabular columns; with `tabular_as_text` they are written into the text
    (`tabular_text.py`) and the text modality takes the tabular one's place.
    """
    check_on_missing(on_missing)
    label_columns = dict(labels.columns) if labels is not None else {}
    wanted = {}  # data.columns in its order, the label entry replaced by the label column(s)
    for key, name in columns.items():
        wanted.update(label_columns if key == "label" else tabular_keys(name or []) if key == "tabular"
                      else {key: name})
    wanted.update(label_columns)
    explicit = {*explicit, *(k for k in label_columns if k not in columns), *modality_keys("tabular", wanted)}
    separator = check_separator(separator)
    folding = folds is not None and bool({"train", "val"} & set(keep))  # both are read: the folds pool them
    plan = plan_sources({"csv": csv, "train": train_csv, "val": val_csv, "test": test_csv}, frames,
                        [*keep, "train", "val"] if folding else keep)
    sources = read_sources(plan, separator)  # none: only an empty test split is kept
    for source in sources.values():  # per role, as a CSV named for two roles is matched (and logged) twice
        source.found = match_columns(list(source.frame.columns), source.name, wanted, explicit)
    first = next(iter(sources.values()), None)
    modalities = choose_modalities(modalities, first, wanted, explicit)
    test = ((f"the {frame_source('test')}",) * 2 if (frames or {}).get("test") is not None
            else (f"data.test_csv={test_csv}", "data.test_csv") if test_csv else None)  # given, kept or not
    _refuse_reused(wanted, [*label_columns, *(m for m in modalities if m != "tabular"), "split"])
    keys = [key for m in modalities for key in modality_keys(m, wanted)]
    empty = pd.DataFrame(columns=[*label_columns, *keys, *(["tabular"] if "tabular" in modalities else []),
                                  "source", "line", "root"])
    if tabular_as_text and "tabular" in modalities:
        empty = _tabular_as_text(empty)
    splits = {s: empty for s in SPLITS}
    for role, source in sources.items():
        require(source, [*label_columns, *keys,
                         *(["split"] if role == "csv" and "split" in explicit else [])], wanted)
        frame = _canonical(source, modalities, root, list(label_columns))
        if tabular_as_text and "tabular" in modalities:
            frame = _tabular_as_text(frame)
        if labels is not None and labels.check is not None:
            labels.check(frame, source.name, {k: source.found[k] for k in label_columns})
        if role == "csv":
            splits.update(_split_one_csv(frame, source, val_fraction, test_fraction, seed, test, labels))
        else:
            splits[role] = frame.drop(columns="split", errors="ignore")
    if folding:
        splits["train"], splits["val"] = fold_splits(splits["train"], splits["val"], *folds, seed,
                                                     labels.strata if labels is not None else None)
    splits = {s: f.reset_index(drop=True) for s, f in splits.items() if s in keep}
    for s in keep:
        if s != "test" and len(splits[s]) == 0:
            raise CrossmodalError(f"{first.name if first else s}: the {s} split has no rows; add rows with split={s} "
                                  f"or adjust data.val_fraction")
    headers = {k: (first.found.get(k, v) if first else v) for k, v in label_columns.items()}
    found, read = dict(first.found) if first else {}, list(modalities)
    if "tabular" in modalities:
        found["tabular"] = ", ".join(wanted[key] for key in modality_keys("tabular", wanted))
        if tabular_as_text:
            found.setdefault("text", f"{found.pop('tabular')} (data.tabular.as_text)")
            modalities = [m for m in MODALITIES if m in {*modalities, "text"} and m != "tabular"]
            log.info("data.tabular.as_text=true: the tabular columns are written into the text (modalities %s)",
                     ",".join(modalities))
    return Table(splits=splits, modalities=list(modalities), columns=found, headers=headers, read=read)


def _refuse_reused(wanted: Mapping[str, str], keys: Sequence[str]) -> None:
    """One line when a tabular column is also the label, split or another modality's column (a label among the
    inputs would be a leak, the others read one column two ways)."""
    taken = {str(wanted[key]): key for key in keys if wanted.get(key) not in (None, "")}
    for key in modality_keys("tabular", wanted):
        if wanted[key] in taken:
            role = taken[wanted[key]]
            what = ("a label column (an input must not hold the label)" if role not in ("image", "text", "audio", "split")
                    else f"data.columns.{role}")
            raise CrossmodalError(f"data.columns.tabular names '{printable(wanted[key], 60)}', which is {what}; "
                                  f"remove it from data.columns.tabular")


def _tabular_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """A canonical frame with its tabular columns written into its text (`tabular_text.py`) and dropped."""
    keys = [c for c in frame.columns if c.startswith(TABULAR)]
    cells = frame[keys].rename(columns=lambda key: key[len(TABULAR):])
    texts = with_tabular_text(frame["text"].tolist() if "text" in frame else None,
                              tabular_texts(cells, list(cells.columns)))
    return frame.drop(columns=[*keys, "tabular"]).assign(text=np.array(texts, dtype=object))
