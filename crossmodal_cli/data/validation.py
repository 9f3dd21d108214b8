"""Check every image and audio file a Table points to, before any training starts.

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


def check_files(table: Table, columns: Mapping[str, str], workers: int = 16) -> None:
    """Raise CrossmodalError for the first CSV/column with missing or undecodable files."""
    for modality, probe in PROBES.items():
        if modality not in table.modalities:
            continue
        frames = [f for f in table.splits.values() if len(f)]
        rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if rows.empty:
            continue
        paths = rows[modality].unique().tolist()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            problems = dict(zip(paths, pool.map(lambda p: _problem(p, probe), paths)))
        bad = rows[rows[modality].map(problems).notna()]
        if len(bad):
            first = bad.iloc[0]
            reason = problems[first[modality]]
            same_file = bad[bad["source"] == first["source"]]
            raise CrossmodalError(
                f"{first['source']}: column '{columns[modality]}': {describe_rows(same_file)} with unusable "
                f"{modality} files, e.g. line {first['line']}: {first[modality] or '(blank)'}: {reason}")
        log.info("checked %d %s files", len(paths), modality)
