"""The CSV contract: read one CSV (or one per split), check columns and labels, split, build the label vocabulary.

The result is a `Table`: one pandas frame per split with canonical columns, whatever the user's column names were:
`image`, `audio` (absolute paths), `text`, `label` (the label as written), `target` (its class index),
`source` (the CSV file) and `line` (the row's line number in that file, header = line 1) for error messages.
The table knows nothing about models; file checks live in `validation.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from crossmodal_cli.errors import CrossmodalError

MODALITIES = ("image", "text", "audio")
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


def describe_rows(frame: pd.DataFrame, limit: int = 5) -> str:
    """'N rows, first at lines a, b, c' for error messages."""
    lines = ", ".join(str(n) for n in frame["line"].head(limit))
    more = "" if len(frame) <= limit else ", ..."
    return f"{len(frame)} row{'s' if len(frame) != 1 else ''} (line{'s' if len(frame) != 1 else ''} {lines}{more})"


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a CSV as strings (blank cells stay ''), with a one-line error for every way it can be unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CrossmodalError(f"{path}: CSV file not found; check data.csv / data.train_csv / data.val_csv / data.test_csv")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise CrossmodalError(f"{path}: the CSV file is empty; it needs a header row and at least one data row") from None
    except UnicodeDecodeError as err:
        raise CrossmodalError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save the CSV as UTF-8") from None
    except (pd.errors.ParserError, ValueError) as err:
        raise CrossmodalError(f"{path}: cannot parse as CSV: {str(err).strip().splitlines()[0]}") from None
    if frame.empty:
        raise CrossmodalError(f"{path}: the CSV has a header but no data rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    frame["source"] = str(path.resolve())
    frame["line"] = np.arange(2, len(frame) + 2)
    return frame


def _canonical(frame: pd.DataFrame, path: Path, columns: Mapping[str, str], modalities: Sequence[str],
               root: Path) -> pd.DataFrame:
    """Rename the user's columns to canonical names, strip cells, resolve paths against root."""
    needed = {"label": columns["label"], **{m: columns[m] for m in modalities}}
    missing = [f"'{col}' (data.columns.{key})" for key, col in needed.items() if col not in frame.columns]
    if missing:
        raise CrossmodalError(f"{path}: column{'s' if len(missing) > 1 else ''} {', '.join(missing)} not found; "
                              f"the CSV has columns: {', '.join(c for c in frame.columns if c not in ('source', 'line'))}")
    out = pd.DataFrame({key: frame[col].str.strip() for key, col in needed.items()})
    for key in ("source", "line"):
        out[key] = frame[key].to_numpy()
    if columns.get("split") and columns["split"] in frame.columns:
        out["split"] = frame[columns["split"]].str.strip().str.lower()
    for modality in ("image", "audio"):
        if modality in out:
            out[modality] = [str(root / p) if p else "" for p in out[modality]]
    blank = out[out["label"] == ""]
    if len(blank):
        raise CrossmodalError(f"{path}: column '{columns['label']}' is blank in {describe_rows(blank)}; "
                              f"every row needs a label (or remove those rows)")
    return out


def _split_by_column(frame: pd.DataFrame, path: Path, column: str) -> dict[str, pd.DataFrame]:
    names = frame["split"].map(SPLIT_ALIASES)
    bad = frame[names.isna()]
    if len(bad):
        raise CrossmodalError(f"{path}: column '{column}' has values other than train/val/test in {describe_rows(bad)} "
                              f"(e.g. '{bad['split'].iloc[0]}')")
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
                      test_fraction, seed) -> dict[str, pd.DataFrame]:
    def load(path) -> tuple[Path, pd.DataFrame]:
        path = Path(path)
        frame = read_csv(path)
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
    empty = pd.DataFrame(columns=["label", *modalities, "source", "line"])
    return {s: (load(p)[1].drop(columns="split", errors="ignore") if p and s in keep else empty)
            for s, p in files.items()}


def load_table(*, csv: str | None = None, train_csv: str | None = None, val_csv: str | None = None,
               test_csv: str | None = None, root: str | None = None, columns: Mapping[str, str],
               modalities: Sequence[str] | None, val_fraction: float, test_fraction: float, seed: int,
               classes: Sequence[str] | None = None, keep: Sequence[str] = SPLITS) -> Table:
    """Read and check the CSV(s) and return a Table.

    `modalities=None` selects every modality whose column exists. `classes` fixes the label vocabulary (evaluation
    of a checkpoint); otherwise it is built from the training split. Only the splits in `keep` are checked and kept.
    """
    first = csv or train_csv or val_csv or test_csv
    if modalities is None:
        header = list(read_csv(first).columns) if first else []
        modalities = [m for m in MODALITIES if columns[m] in header]
        if not modalities:
            raise CrossmodalError(f"{first}: none of the modality columns "
                                  f"{', '.join(repr(columns[m]) for m in MODALITIES)} found (set data.columns.*)")
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise CrossmodalError(f"modalities={list(modalities)}: choose one or more of {', '.join(MODALITIES)}")
    modalities = [m for m in MODALITIES if m in modalities]
    splits = _read_split_files(csv, train_csv, val_csv, test_csv, keep, columns, modalities, root,
                               val_fraction, test_fraction, seed)
    splits = {s: f.reset_index(drop=True) for s, f in splits.items() if s in keep}
    for s in keep:
        if s != "test" and len(splits[s]) == 0:
            raise CrossmodalError(f"{first}: the {s} split has no rows; add rows with split={s} "
                                  f"or adjust data.val_fraction")
    if classes is None:
        classes = _class_names(splits["train"]["label"])
    index = {name: i for i, name in enumerate(classes)}
    for s, frame in splits.items():
        unseen = frame[~frame["label"].isin(index)]
        if len(unseen):
            where = "the training split" if "train" in keep else "the checkpoint's label vocabulary"
            raise CrossmodalError(f"{unseen['source'].iloc[0]}: label '{unseen['label'].iloc[0]}' in the {s} split "
                                  f"is not in {where} ({describe_rows(unseen)}); known labels: "
                                  f"{', '.join(list(classes)[:20])}")
        frame["target"] = frame["label"].map(index).astype("int64")
    return Table(splits=splits, classes=list(classes), modalities=list(modalities))
