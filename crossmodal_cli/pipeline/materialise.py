"""A DataFrame given to `fit` becomes files in the run folder: the rows as RUN/data.csv, and in-memory images and
audio (encoded bytes, PIL images) as files under RUN/inputs/, their cells replaced by the files' paths.

Why write it: a run is read again after training (resume, cmeval on its test split, distillation from it), so
its data must outlive the Python process that held the DataFrame; the files are exactly the inputs it trained on.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import soundfile as sf
from PIL import Image, UnidentifiedImageError

from crossmodal_cli.errors import CrossmodalError


def write_frame(frame: pd.DataFrame, run_dir: Path) -> Path:
    """Write `frame` as RUN/data.csv (in-memory media as files under RUN/inputs/); returns the CSV's path."""
    if frame.empty:
        raise CrossmodalError("fit: the DataFrame has no rows")
    run_dir.mkdir(parents=True, exist_ok=True)
    folder = run_dir / "inputs"
    out = frame.copy()
    for column in out.columns:
        values = out[column].tolist()
        if not any(isinstance(v, (bytes, Image.Image)) for v in values):
            continue
        out[column] = [_write_cell(v, folder / _safe(column), row) if isinstance(v, (bytes, Image.Image)) else v
                       for row, v in enumerate(values)]
    path = run_dir / "data.csv"
    out.to_csv(path, index=False)
    return path


def _safe(column: object) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(column)) or "column"


def _write_cell(value: bytes | Image.Image, folder: Path, row: int) -> str:
    """The file for one in-memory cell (a PIL image as PNG, encoded bytes as they are, named by their format)."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(value, Image.Image):
        path = folder / f"row-{row}.png"
        value.save(path)
        return str(path.resolve())
    path = folder / f"row-{row}.{_extension(value)}"
    path.write_bytes(value)
    return str(path.resolve())


def _extension(data: bytes) -> str:
    """The file extension of encoded image or audio bytes ("bin" when neither decoder knows them: the start-up
    checks then report the row as unreadable, as for a damaged file)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return (image.format or "img").lower()
    except (UnidentifiedImageError, OSError, ValueError):
        pass
    try:
        return sf.info(io.BytesIO(data)).format.lower()
    except (RuntimeError, sf.LibsndfileError, ValueError, TypeError):
        return "bin"
