"""Check every input a Table points to (image and audio files, texts), before any training starts.

One pass per modality over the unique paths, in a thread pool (decoders release the GIL): the file must exist,
be a regular file and decode. A failure stops the run with one line naming the CSV, the column, the first rows
and their count.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping

import pandas as pd
import soundfile as sf
from PIL import Image

from crossmodal_cli.data.table import Table, describe_rows
from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)


def probe_image(path: str) -> str | None:
    """None if the image decodes, else the reason."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (64, 64))
            img.load()
    except Exception as err:  # any decoder failure is a data problem, reported with its reason
        return f"cannot decode image ({type(err).__name__}: {err})"
    return None


def probe_audio(path: str) -> str | None:
    """None if the audio file has a readable header and at least one frame, else the reason."""
    try:
        info = sf.info(path)
    except Exception as err:
        return f"cannot decode audio ({type(err).__name__}: {err})"
    return None if info.frames > 0 else "audio file has no samples"


PROBES: dict[str, Callable[[str], str | None]] = {"image": probe_image, "audio": probe_audio}


def _problem(path: str, probe: Callable[[str], str | None]) -> str | None:
    if not path:
        return "blank path"
    if not os.path.exists(path):
        return "file not found"
    if not os.path.isfile(path):
        return "not a regular file"
    return probe(path)


def _unusable(rows: pd.DataFrame, modality: str, workers: int) -> pd.Series:
    """Per row: the reason its `modality` input is unusable, or None."""
    if modality == "text":
        return rows["text"].map(lambda t: None if t else "blank text")
    probe = PROBES[modality]
    paths = rows[modality].unique().tolist()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = dict(zip(paths, pool.map(lambda p: _problem(p, probe), paths)))
    log.info("checked %d %s files", len(paths), modality)
    return rows[modality].map(problems)


def _raise_first(table: Table, reasons: dict, columns: Mapping[str, str]) -> None:
    """error mode: one line naming the CSV, column, first lines and count of the first modality with problems."""
    for modality in table.modalities:
        bad = pd.concat([rows.assign(reason=reasons[s][modality])[reasons[s][modality].notna()]
                         for s, rows in table.splits.items() if s in reasons]).sort_values(["source", "line"])
        if bad.empty:
            continue
        first = bad.iloc[0]
        shown = first[modality] if modality != "text" else ""
        raise CrossmodalError(
            f"{first['source']}: column '{columns[modality]}': {describe_rows(bad[bad['source'] == first['source']])}"
            f" with unusable {modality} input, e.g. line {first['line']}: {shown or '(blank)'}: {first['reason']} "
            f"(fix the rows, or set data.on_missing=drop or zero)")


def check_inputs(table: Table, columns: Mapping[str, str], on_missing: str, workers: int = 16) -> dict:
    """Check every row's inputs; apply `on_missing` and return a report {split: {modality: rows affected}}.

    error: raise CrossmodalError naming the CSV, column, first lines and count of the first bad modality.
    drop:  remove rows with any unusable input.
    zero:  keep them; column `has_<modality>` is False where the input is missing (the model masks it out);
           rows with no usable input at all are dropped.
    """
    if on_missing not in ("error", "drop", "zero"):
        raise CrossmodalError(f"data.on_missing={on_missing}: use error, drop or zero")
    reasons = {s: {m: _unusable(rows, m, workers) for m in table.modalities}
               for s, rows in table.splits.items() if not rows.empty}
    if on_missing == "error":
        _raise_first(table, reasons, columns)
    report: dict = {}
    for split, by_modality in reasons.items():
        rows = table.splits[split]
        usable = pd.concat([r.isna() for r in by_modality.values()], axis=1)
        report[split] = {m: int(r.notna().sum()) for m, r in by_modality.items() if r.notna().any()}
        if on_missing == "drop":
            table.splits[split] = rows[usable.all(axis=1)].reset_index(drop=True)
        elif on_missing == "zero":
            for modality, reason in by_modality.items():
                rows[f"has_{modality}"] = reason.isna().to_numpy()
            table.splits[split] = rows[usable.any(axis=1)].reset_index(drop=True)
        if report[split]:
            log.warning("%s split: rows with unusable inputs %s; %d rows left (data.on_missing=%s)", split,
                        report[split], len(table.splits[split]), on_missing)
        if table.splits[split].empty and split != "test":
            raise CrossmodalError(f"the {split} split has no usable rows left after data.on_missing={on_missing}")
    return report
