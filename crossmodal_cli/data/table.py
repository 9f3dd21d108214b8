"""The CSV contract: read one CSV (or one per split), check columns and labels, split, build the label vocabulary.

The result is a `Table`: one pandas frame per split with canonical columns, whatever the user's column names were:
`image`, `audio` (absolute paths, symlinks and `..` resolved), `text`, `label` (the label as written), `target`
(its class index), `source` (the CSV file), `line` (the line in that file where the row starts, header = line 1)
for error messages, and `root` (the resolved data root the paths must stay under; checked in `validation.py`).
The table knows nothing about models; file checks live in `validation.py`.
"""
from __future__ import annotations

import codecs
import csv as csv_module
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)

MODALITIES = ("image", "text", "audio")
ON_MISSING = ("error", "drop", "zero")
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}


@dataclass
class Table:
    """Per-split frames with canonical columns, the class names (index = target) and the modalities in use."""

    splits: dict[str, pd.DataFrame]
    classes: list[str]
    modalities: list[str]
    report: dict = field(default_factory=dict)  # rows with unusable inputs per split and modality (validation.py)


def printable(value: object, limit: int = 120) -> str:
    """`value` as one printable line for an error message: line breaks and control characters escaped, long text cut."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe_rows(frame: pd.DataFrame, limit: int = 5) -> str:
    """'N rows, first at lines a, b, c' for error messages."""
    lines = ", ".join(str(n) for n in frame["line"].head(limit))
    more = "" if len(frame) <= limit else ", ..."
    return f"{len(frame)} row{'s' if len(frame) != 1 else ''} (line{'s' if len(frame) != 1 else ''} {lines}{more})"


def _decode(path: Path, data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CrossmodalError(f"{path}: the CSV is UTF-16 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise CrossmodalError(f"{path}: not UTF-8 text ({err.reason} at line {line}, byte {err.start}); "
                              f"save the CSV as UTF-8") from None


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a CSV as strings, indexed by the line each row starts on; a one-line error for every way it can be bad.

    Blank lines and rows of empty cells are skipped; short rows are padded with ''; columns with a blank name are
    ignored. The csv module (not pandas) parses, because it reports where each row starts even when a quoted cell
    spans several lines.
    """
    path = Path(path)
    if not path.is_file():
        raise CrossmodalError(f"{path}: CSV file not found; check data.csv / data.train_csv / data.val_csv / data.test_csv")
    try:
        text = _decode(path, path.read_bytes())
    except OSError as err:
        raise CrossmodalError(f"{path}: cannot read the CSV file ({err.strerror}); check its permissions") from None
    reader = csv_module.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows, lines, end = [], [], 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if not "".join(record).strip():
                continue  # a blank line, or a row of empty cells as spreadsheets append
            if header is None:
                header = [cell.strip() for cell in record]
            else:
                rows.append(record)
                lines.append(start)
    except csv_module.Error as err:
        raise CrossmodalError(f"{path}: cannot parse as CSV at line {end + 1}: {printable(err)}") from None
    if header is None:
        raise CrossmodalError(f"{path}: the CSV file is empty; it needs a header row and at least one data row")
    if not rows:
        raise CrossmodalError(f"{path}: the CSV has a header but no data rows")
    named = [name for name in header if name]
    repeated = sorted({name for name in named if named.count(name) > 1})
    if repeated:
        raise CrossmodalError(f"{path}: column name{'s' if len(repeated) > 1 else ''} "
                              f"{', '.join(repr(printable(n, 60)) for n in repeated)} appear more than once in the "
                              f"header; give every column a distinct name")
    width = len(header)
    long = [line for row, line in zip(rows, lines) if len(row) > width and any(c.strip() for c in row[width:])]
    if long:
        rows_at = describe_rows(pd.DataFrame({"line": long}))
        raise CrossmodalError(f"{path}: {rows_at} with more cells than the header's {width}; "
                              f"quote cells that contain commas")
    if any(len(row) != width for row in rows):
        rows = [row[:width] + [""] * (width - len(row)) for row in rows]
    columns = list(zip(*rows))
    return pd.DataFrame({name: list(columns[i]) for i, name in enumerate(header) if name},
                        index=pd.Index(lines, name="line"), dtype=object)


def resolve_paths(cells: Sequence[str], root: str) -> list[str]:
    """Each non-blank cell joined to `root` (an absolute cell stays as it is) and resolved: `..` and symlinks
    followed, so the result says where the file really is. Blank cells stay ''."""
    real_dirs: dict[str, str] = {}
    resolved = {"": ""}
    for cell in dict.fromkeys(cells):
        if cell in resolved:
            continue
        joined = os.path.join(root, cell)
        try:
            head, tail = os.path.split(joined)
            if tail in ("", ".", ".."):
                resolved[cell] = os.path.realpath(joined)
                continue
            if head not in real_dirs:  # folders are shared by many rows: resolve each once
                real_dirs[head] = os.path.realpath(head)
            full = os.path.join(real_dirs[head], tail)
            resolved[cell] = os.path.realpath(full) if os.path.islink(full) else full
        except ValueError:  # a NUL character or similar: kept (normalised) as written; the file check reports it
            resolved[cell] = os.path.normpath(joined)
    return [resolved[cell] for cell in cells]


def outside_root(path: str, root: str) -> bool:
    """True when the resolved `path` is not `root` or a path below it."""
    return os.path.commonpath([root, path]) != root


def _canonical(frame: pd.DataFrame, path: Path, columns: Mapping[str, str], modalities: Sequence[str],
               root: Path) -> pd.DataFrame:
    """Rename the user's columns to canonical names, strip cells, resolve paths against root."""
    needed = {"label": columns["label"], **{m: columns[m] for m in modalities}}
    missing = [f"'{printable(col, 60)}' (data.columns.{key})" for key, col in needed.items()
               if col not in frame.columns]
    if missing:
        present = [printable(c, 60) for c in frame.columns]
        raise CrossmodalError(f"{path}: column{'s' if len(missing) > 1 else ''} {', '.join(missing)} not found; "
                              f"the CSV has columns: {', '.join(present[:30])}{', ...' if len(present) > 30 else ''}")
    out = pd.DataFrame({key: frame[col].str.strip().to_numpy() for key, col in needed.items()})
    out["source"] = str(path.resolve())
    out["line"] = frame.index.to_numpy()
    if columns.get("split") and columns["split"] in frame.columns:
        out["split"] = frame[columns["split"]].str.strip().str.lower().to_numpy()
    real_root = os.path.realpath(root)
    for modality in ("image", "audio"):
        if modality in out:
            out[modality] = resolve_paths(out[modality].tolist(), real_root)
    out["root"] = real_root
    blank = out[out["label"] == ""]
    if len(blank):
        raise CrossmodalError(f"{path}: column '{printable(columns['label'], 60)}' is blank in {describe_rows(blank)}; "
                              f"every row needs a label (or remove those rows)")
    return out


def _split_by_column(frame: pd.DataFrame, path: Path, column: str) -> dict[str, pd.DataFrame]:
    names = frame["split"].map(SPLIT_ALIASES)
    bad = frame[names.isna()]
    if len(bad):
        raise CrossmodalError(f"{path}: column '{printable(column, 60)}' has values other than train/val/test in "
                              f"{describe_rows(bad)} (e.g. '{printable(bad['split'].iloc[0], 60)}')")
    return {s: frame[names == s].drop(columns="split") for s in SPLITS}


def stratified_split(frame: pd.DataFrame, val_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, pd.DataFrame]:
    """Seeded split that keeps each label's proportion in every split and at least one row per label in train."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise CrossmodalError(f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be in "
                              f"[0, 1) and sum to less than 1")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for _, group in frame.groupby("label", sort=True):
        idx = rng.permutation(group.index.to_numpy())
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        n_val = min(n_val, max(len(idx) - n_test - 1, 0))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    return {s: frame.loc[np.sort(np.concatenate(parts[s]))] for s in SPLITS}


def _class_names(labels: pd.Series) -> list[str]:
    """Sorted label vocabulary: numerically when every label is an integer, else alphabetically."""
    unique = labels.unique().tolist()
    try:
        return [str(v) for v in sorted(unique, key=int)]
    except ValueError:
        return sorted(unique)


def _read_split_files(csv, train_csv, val_csv, test_csv, keep, columns, modalities, root, val_fraction,
                      test_fraction, seed, already_read: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    def load(path) -> tuple[Path, pd.DataFrame]:
        frame = already_read[path] if path in already_read else read_csv(path)
        path = Path(path)
        return path, _canonical(frame, path, columns, modalities, Path(root) if root else path.resolve().parent)

    if csv:
        path, frame = load(csv)
        if "split" in frame:
            return _split_by_column(frame, path, columns["split"])
        return stratified_split(frame, val_fraction, test_fraction, seed)
    files = {"train": train_csv, "val": val_csv, "test": test_csv}
    if not train_csv and "train" in keep:
        raise CrossmodalError("no data given: set data.csv=FILE.csv, or data.train_csv and data.val_csv")
    if not val_csv and "val" in keep:
        raise CrossmodalError("data.val_csv is not set: give a validation CSV, or use data.csv with a split column")
    empty = pd.DataFrame(columns=["label", *modalities, "source", "line", "root"])
    return {s: (load(p)[1].drop(columns="split", errors="ignore") if p and s in keep else empty)
            for s, p in files.items()}


def load_table(*, csv: str | None = None, train_csv: str | None = None, val_csv: str | None = None,
               test_csv: str | None = None, root: str | None = None, columns: Mapping[str, str],
               modalities: Sequence[str] | None, val_fraction: float, test_fraction: float, seed: int,
               classes: Sequence[str] | None = None, keep: Sequence[str] = SPLITS, on_missing: str = "error") -> Table:
    """Read and check the CSV(s) and return a Table.

    `modalities=None` selects every modality whose column exists. `classes` fixes the label vocabulary (evaluation
    of a checkpoint); otherwise it is built from the training split. Only the splits in `keep` are checked and kept.
    A label outside the vocabulary is an error with `on_missing=error`; otherwise (drop, zero: a row without a
    known class cannot be kept) those rows are dropped and counted in `Table.report[split]["unknown_label"]`.
    """
    if on_missing not in ON_MISSING:
        raise CrossmodalError(f"data.on_missing={on_missing}: use {', '.join(ON_MISSING)}")
    first = csv or train_csv or val_csv or test_csv
    already_read = {}
    if modalities is None:
        if first:
            already_read[first] = read_csv(first)
        header = list(already_read[first].columns) if first else []
        modalities = [m for m in MODALITIES if columns[m] in header]
        if not modalities:
            raise CrossmodalError(f"{first}: none of the modality columns "
                                  f"{', '.join(repr(columns[m]) for m in MODALITIES)} found (set data.columns.*)")
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise CrossmodalError(f"modalities={list(modalities)}: choose one or more of {', '.join(MODALITIES)}")
    modalities = [m for m in MODALITIES if m in modalities]
    splits = _read_split_files(csv, train_csv, val_csv, test_csv, keep, columns, modalities, root,
                               val_fraction, test_fraction, seed, already_read)
    splits = {s: f.reset_index(drop=True) for s, f in splits.items() if s in keep}
    for s in keep:
        if s != "test" and len(splits[s]) == 0:
            raise CrossmodalError(f"{first}: the {s} split has no rows; add rows with split={s} "
                                  f"or adjust data.val_fraction")
    if classes is None:
        classes = _class_names(splits["train"]["label"])
    splits, report = _apply_vocabulary(splits, list(classes), "train" in keep, on_missing)
    return Table(splits=splits, classes=list(classes), modalities=list(modalities), report=report)


def _apply_vocabulary(splits: dict[str, pd.DataFrame], classes: list[str], from_train: bool,
                      on_missing: str) -> tuple[dict[str, pd.DataFrame], dict]:
    """Add `target` (class index) to every split; rows whose label is not a class: error, or dropped and counted."""
    index = {name: i for i, name in enumerate(classes)}
    where = "the training split" if from_train else "the checkpoint's label vocabulary"
    out, report = {}, {}
    for s, frame in splits.items():
        known = frame["label"].isin(index)
        unseen = frame[~known]
        if len(unseen) and on_missing == "error":
            raise CrossmodalError(f"{unseen['source'].iloc[0]}: label '{printable(unseen['label'].iloc[0], 60)}' in "
                                  f"the {s} split is not in {where} ({describe_rows(unseen)}); known labels: "
                                  f"{', '.join(printable(c, 40) for c in classes[:20])}"
                                  f"{', ...' if len(classes) > 20 else ''} (fix the labels, or set "
                                  f"data.on_missing=drop to skip those rows)")
        if len(unseen):
            report[s] = {"unknown_label": len(unseen)}
            log.warning("%s split: dropped %s whose label is not in %s (data.on_missing=%s)", s,
                        describe_rows(unseen), where, on_missing)
            frame = frame[known].reset_index(drop=True)
            if frame.empty and s != "test":
                raise CrossmodalError(f"{unseen['source'].iloc[0]}: the {s} split has no rows left after dropping "
                                      f"{describe_rows(unseen)} whose label is not in {where}; fix the labels")
        frame = frame.copy()
        frame["target"] = frame["label"].map(index).astype("int64")
        out[s] = frame
    return out, report
