"""Checkpoints: written atomically, loaded without executing code.

A checkpoint is one file holding only tensors and plain Python values (str, int, float, bool, list, dict, None):
model/optimizer/scheduler/scaler state, the resolved config as YAML text, the class names, the tokenizer as JSON
text, epoch/step counters and RNG states. It is read with `torch.load(weights_only=True)`, which refuses any
pickle that would construct arbitrary objects, so a crafted file cannot run code.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from crossmodal_cli.errors import CrossmodalError

FORMAT = "crossmodal-checkpoint"
VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write `state` to `path` atomically: temporary file in the same folder, flush + fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint; one-line errors for missing, corrupt or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise CrossmodalError(f"{path}: checkpoint not found (expected e.g. outputs/DATE/TIME/checkpoints/best.ckpt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0]
        raise CrossmodalError(f"{path}: refused to load: the file holds objects other than tensors and plain values "
                              f"({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CrossmodalError(f"{path}: not a readable checkpoint (corrupt or truncated: "
                              f"{str(err).strip().splitlines()[0][:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CrossmodalError(f"{path}: not a crossmodal checkpoint")
    if state.get("version", 0) > VERSION:
        raise CrossmodalError(f"{path}: checkpoint version {state['version']} is newer than this crossmodal "
                              f"(reads up to {VERSION}); upgrade crossmodal")
    return state
