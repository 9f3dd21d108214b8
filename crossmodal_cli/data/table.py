"""The CSV contract: read one CSV (or one per split), check columns and labels, split, build the label vocabulary.

The result is a `Table`: one pandas frame per split with canonical columns, whatever the user's column names were:
`image`, `audio` (absolute paths, symlinks and `..` resolved), `text`, `label` (the label as written), `target`
(its class index), `source` (the CSV file), `line` (the line in that file where the row starts, header = line 1)
for error messages, and `root` (the resolved data root the paths must stay under; checked in `validation.py`).
The table knows nothing about models; file checks live in `validation.py`.

Column names: a name the user set (`explicit`) must be in the header as written; a default name may match a
header that differs only in case. The separator (comma, semicolon, tab or pipe) is detected from the header line
unless given.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from crossmodal_cli.data.csvfile import check_separator, describe_rows, printable, read_csv, resolve_paths
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.tasks.base import Task
from crossmodal_cli.tasks.classification import Classification

log = logging.getLogger(__name__)

MODALITIES = ("image", "text", "audio")
ON_MISSING = ("error", "drop", "zero")
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}


@dataclass
class Table:
    """Per-split frames with canonical columns (and `target`, made by the task), the task (fitted: e.g. its class
    vocabulary) and the modalities in use."""

    splits: dict[str, pd.DataFrame]
    task: Task
    modalities: list[str]
    report: dict = field(default_factory=dict)  # rows with unusable inputs per split and modality (validation.py)
    columns: dict[str, str] = field(default_factory=dict)  # data.columns key -> header name (first CSV) as found

    @property
    def classes(self) -> list[str]:
        """The class names (index = target) of a classification task; [] for tasks without classes."""
        return list(getattr(self.task, "classes", []))


@dataclass
class CsvFile:
    """One CSV as read: its path, its rows (as strings) and {data.columns key: header name} as found."""

    path: Path
    frame: pd.DataFrame
    found: dict[str, str]


def _list_columns(names: Sequence[str]) -> str:
    """'the CSV has columns: a, b, …' (at most 30) for "not found" errors."""
    shown = [printable(c, 60) for c in names]
    return f"the CSV has columns: {', '.join(shown[:30])}{', ...' if len(shown) > 30 else ''}"


def match_columns(header: Sequence[str], path: Path, columns: Mapping[str, str],
                  explicit: Collection[str]) -> dict[str, str]:
    """{data.columns key: header name} for every configured name in `header`.

    A name in `explicit` (set by the user) must match exactly. A default name may also match one header that
    differs only in case (logged); two such headers are an error naming both.
    """
    found, relaxed = {}, []
    for key, name in columns.items():
        if name is None or str(name) == "":
            continue
        name = str(name)
        if name in header:
            found[key] = name
            continue
        similar = [h for h in header if h.casefold() == name.casefold()]
        if key in explicit or not similar:
            continue
        if len(similar) > 1:
            raise CrossmodalError(f"{path}: columns {' and '.join(repr(printable(h, 60)) for h in similar)} both "
                                  f"match data.columns.{key}={name!r} when case is ignored; rename one, or set "
                                  f"data.columns.{key} to the one to use")
        found[key] = similar[0]
        relaxed.append(f"'{printable(similar[0], 60)}' for data.columns.{key}={name!r}")
    if relaxed:
        log.info("%s: using column %s (the case differs)", path, ", ".join(relaxed))
    return found


def _require(file: CsvFile, keys: Sequence[str], columns: Mapping[str, str]) -> None:
    """One-line error naming the configured columns in `keys` that `file` lacks and listing the ones it has."""
    missing = []
    for key in keys:
        if key in file.found:
            continue
        name = str(columns[key])
        similar = [h for h in file.frame.columns if h.casefold() == name.casefold()]
        hint = f"; '{printable(similar[0], 60)}' differs only in case" if similar else ""
        missing.append(f"'{printable(name, 60)}' (data.columns.{key}{hint})")
    if missing:
        raise CrossmodalError(f"{file.path}: column{'s' if len(missing) > 1 else ''} {', '.join(missing)} not found; "
                              f"{_list_columns(list(file.frame.columns))}")


def _choose_modalities(modalities: Sequence[str] | None, file: CsvFile | None, columns: Mapping[str, str],
                       explicit: Collection[str]) -> list[str]:
    """The modalities asked for, or (None) those whose column `file` has; a column the user named must exist."""
    if modalities is None and file is None:
        raise CrossmodalError("no data given: set data.csv=FILE.csv, or data.train_csv and data.val_csv")
    if modalities is None:
        _require(file, [m for m in MODALITIES if m in explicit], columns)
        modalities = [m for m in MODALITIES if m in file.found]
        if not modalities:
            names = ", ".join(f"'{printable(columns[m], 60)}'" for m in MODALITIES)
            raise CrossmodalError(f"{file.path}: none of the modality columns {names} found (name yours with "
                                  f"data.columns.image / text / audio); {_list_columns(list(file.frame.columns))}")
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise CrossmodalError(f"modalities={list(modalities)}: choose one or more of {', '.join(MODALITIES)}")
    return [m for m in MODALITIES if m in modalities]


def _canonical(file: CsvFile, modalities: Sequence[str], root: Path, labels: Sequence[str]) -> pd.DataFrame:
    """Rename the user's columns to canonical names, strip cells, resolve paths against root."""
    frame, found = file.frame, file.found
    out = pd.DataFrame({key: frame[found[key]].str.strip().to_numpy() for key in (*labels, *modalities)})
    out["source"] = str(file.path.resolve())
    out["line"] = frame.index.to_numpy()
    if "split" in found:
        out["split"] = frame[found["split"]].str.strip().str.lower().to_numpy()
    real_root = os.path.realpath(root)
    for modality in ("image", "audio"):
        if modality in out:
            out[modality] = resolve_paths(out[modality].tolist(), real_root)
    out["root"] = real_root
    return out


def _split_by_column(frame: pd.DataFrame, path: Path, column: str) -> dict[str, pd.DataFrame]:
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


def _sources(csv: str | None, train_csv: str | None, val_csv: str | None, test_csv: str | None,
             keep: Sequence[str]) -> dict[str, str]:
    """Which file provides which of the kept splits: {"csv": …} (the splits of one CSV) and/or {split: file}.

    With data.csv and data.test_csv, data.csv provides train and val, data.test_csv the test split.
    """
    if csv:
        wanted = {"csv": csv if not test_csv or set(keep) - {"test"} else None,
                  "test": test_csv if "test" in keep else None}
        return {role: path for role, path in wanted.items() if path}
    if not train_csv and "train" in keep:
        raise CrossmodalError("no data given: set data.csv=FILE.csv, or data.train_csv and data.val_csv")
    if not val_csv and "val" in keep:
        raise CrossmodalError("data.val_csv is not set: give a validation CSV, or use data.csv with a split column")
    return {s: path for s, path in {"train": train_csv, "val": val_csv, "test": test_csv}.items() if path and s in keep}


def _split_one_csv(frame: pd.DataFrame, file: CsvFile, val_fraction: float, test_fraction: float, seed: int,
                   test_csv: str | None, task: Task) -> dict[str, pd.DataFrame]:
    """The splits of data.csv: its split column, else a seeded stratified split; with data.test_csv, no test rows."""
    if "split" in frame:
        splits = _split_by_column(frame, file.path, file.found["split"])
        if test_csv and len(splits["test"]):
            raise CrossmodalError(f"{file.path}: column '{printable(file.found['split'], 60)}' puts "
                                  f"{describe_rows(splits['test'])} in the test split, and data.test_csv={test_csv} "
                                  f"is set too, so the test split is ambiguous; remove one of them (the test rows "
                                  f"or data.test_csv)")
        how = f"its column '{printable(file.found['split'], 60)}'"
    else:
        strata = task.strata(frame)
        splits = stratified_split(frame, val_fraction, 0.0 if test_csv else test_fraction, seed, strata)
        how = f"a seeded {'stratified' if strata is not None else 'random'} split (data.test_fraction unused)"
    if test_csv:
        log.info("test split: data.test_csv=%s; train and val: data.csv=%s, by %s", test_csv, file.path, how)
    return splits


def load_table(*, csv: str | None = None, train_csv: str | None = None, val_csv: str | None = None,
               test_csv: str | None = None, root: str | None = None, columns: Mapping[str, str],
               modalities: Sequence[str] | None, val_fraction: float, test_fraction: float, seed: int,
               classes: Sequence[str] | None = None, keep: Sequence[str] = SPLITS, on_missing: str = "error",
               explicit: Collection[str] = (), separator: str = "auto", task: Task | None = None,
               labels_needed: bool = True) -> Table:
    """Read and check the CSV(s) and return a Table.

    `modalities=None` selects every modality whose column exists. `explicit` holds the data.columns keys the user
    set (they must exist as written; other names may differ in case). `separator`: see `read_csv`. `task` (default:
    classification) names the label column(s), the strata of a seeded split, and turns labels into targets: when
    it is not fitted yet (a checkpoint's task is), it is fitted on the training split. `classes` fixes a
    classification vocabulary. Only the splits in `keep` are checked and kept. A label the task cannot use is an
    error with `on_missing=error`; otherwise (drop, zero: a row without a usable target cannot be kept) those rows
    are dropped and counted in `Table.report[split]["unknown_label"]`. `labels_needed=False` (cmpredict): label
    columns are neither required nor read, and every row's target is 0.
    """
    if on_missing not in ON_MISSING:
        raise CrossmodalError(f"data.on_missing={on_missing}: use {', '.join(ON_MISSING)}")
    task = task if task is not None else Classification()
    if classes is not None:
        task.load_state({"classes": list(classes)})
    labels = task.label_columns(columns) if labels_needed else {}
    wanted = {}  # data.columns in its order, the label entry replaced by the task's label column(s)
    for key, name in columns.items():
        wanted.update(labels if key == "label" else {key: name})
    wanted.update(labels)
    explicit = {*explicit, *(k for k in labels if k not in columns)}
    separator = check_separator(separator)
    sources = _sources(csv, train_csv, val_csv, test_csv, keep)  # none: only an empty test split is kept
    read = {path: read_csv(path, separator) for path in dict.fromkeys(sources.values())}
    files = {role: CsvFile(Path(path), read[path], match_columns(list(read[path].columns), Path(path), wanted,
                                                                 explicit)) for role, path in sources.items()}
    first = next(iter(files.values()), None)
    modalities = _choose_modalities(modalities, first, wanted, explicit)
    empty = pd.DataFrame(columns=[*labels, *modalities, "source", "line", "root"])
    splits = {s: empty for s in SPLITS}
    for role, file in files.items():
        _require(file, [*labels, *modalities, *(["split"] if role == "csv" and "split" in explicit else [])], wanted)
        frame = _canonical(file, modalities, Path(root) if root else file.path.resolve().parent, list(labels))
        if labels_needed:
            task.check_labels(frame, file.path, {k: file.found[k] for k in labels})
        if role == "csv":
            splits.update(_split_one_csv(frame, file, val_fraction, test_fraction, seed, test_csv, task))
        else:
            splits[role] = frame.drop(columns="split", errors="ignore")
    splits = {s: f.reset_index(drop=True) for s, f in splits.items() if s in keep}
    for s in keep:
        if s != "test" and len(splits[s]) == 0:
            raise CrossmodalError(f"{first.path if first else s}: the {s} split has no rows; add rows with split={s} "
                                  f"or adjust data.val_fraction")
    headers = {k: (first.found.get(k, v) if first else v) for k, v in labels.items()}
    if not labels_needed:
        splits = {s: f.assign(target=0) for s, f in splits.items()}
        return Table(splits=splits, task=task, modalities=list(modalities), columns=dict(first.found) if first else {})
    if not task.fitted:
        task.fit(splits["train"], headers)
    report = {}
    for s in list(splits):
        splits[s], dropped = task.targets(splits[s], s, on_missing, headers)
        if dropped:
            report[s] = {"unknown_label": dropped}
    return Table(splits=splits, task=task, modalities=list(modalities), report=report,
                 columns=dict(first.found) if first else {})
