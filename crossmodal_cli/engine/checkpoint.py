"""Checkpoints: written atomically, loaded without executing code.

A checkpoint is one file holding only tensors and plain Python values (str, int, float, bool, list, dict, None):
model/optimizer/scheduler/scaler state, the resolved config as YAML text, the task's state (`task`: e.g. its class
names, or the target mean/std; version 2), the tokenizer as JSON text, epoch/step counters and RNG states.
Version 1 (before tasks owned their state) stored only `classes`; `task_state` reads both. It is read with
`torch.load(weights_only=True)`, which refuses any pickle that would construct arbitrary objects, so a crafted file
cannot run code.
"""
from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from crossmodal_cli.engine import distributed
from crossmodal_cli.errors import CrossmodalError

FORMAT = "crossmodal-checkpoint"
VERSION = 2


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


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:160]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint; one-line errors for missing, corrupt or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise CrossmodalError(f"{path}: checkpoint not found (expected e.g. outputs/DATE/TIME/checkpoints/best.ckpt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CrossmodalError(f"{path}: refused to load: the file holds objects other than tensors and plain values "
                              f"({_first_line(err)})") from None
    except Exception as err:  # torch.load fails in many ways on damaged files (EOFError, IndexError, struct.error…)
        raise CrossmodalError(f"{path}: not a readable checkpoint (corrupt or truncated: {_first_line(err)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CrossmodalError(f"{path}: not a crossmodal checkpoint")
    version = state.get("version")
    if not isinstance(version, int) or version < 1:
        raise CrossmodalError(f"{path}: checkpoint has an invalid version {version!r}")
    if version > VERSION:
        raise CrossmodalError(f"{path}: checkpoint version {version} is newer than this crossmodal "
                              f"(reads up to {VERSION}); upgrade crossmodal")
    return state


# keys added after checkpoint format 1: {dotted key: the value that reproduces the behaviour before the key existed}
ADDED_KEYS = {"data.resize": "squash", "data.separator": ",", "trainer.feature_cache": False,
              "trainer.cache_dir": "~/.cache/crossmodal/features", "data.cache": None,
              "data.cache_dir": "~/.cache/crossmodal/preprocessed", "trainer.compile": False,
              "trainer.channels_last": "auto", "trainer.tf32": True,
              "data.allow_outside_root": False, "data.validation_cache": None, "data.folds": None,
              "data.fold": 0, "data.columns.tabular": [],
              "data.tabular": {"categorical": [], "numeric": [], "transform": "standard", "transforms": None,
                               "min_count": 1, "as_text": False},
              "encoder.tabular": {"_target_": "crossmodal_cli.encoders.tabular.TabularMLP", "embedding_dim": 16,
                                  "hidden_size": 128, "num_layers": 2, "dropout": 0.1},
              "distill": {"teacher": None, "alpha": 0.5, "temperature": 2.0}}


def stored_config(state: dict[str, Any]) -> dict[str, Any]:
    """The run config a checkpoint stores (YAML text), as plain values, upgraded: the keys added since it was written
    are set to the behaviour it had (`ADDED_KEYS`), so an old checkpoint rebuilds and resumes as it trained."""
    config = yaml.safe_load(state["config"])
    for key, value in ADDED_KEYS.items():
        *parents, name = key.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node.setdefault(name, value)
    return config


def task_state(state: dict[str, Any]) -> dict[str, Any]:
    """The task's state in a loaded checkpoint: `task` (version 2), or a version-1 classification's `classes`."""
    if state.get("task") is not None:
        return state["task"]
    return {"classes": list(state["classes"])}


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states as values a weights_only checkpoint can hold."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                       "gauss": gauss},
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of rng_state()."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _same_file(source: Path, path: Path, state: dict[str, Any]) -> None:
    """`path` holding what `source` (just written) holds: a hard link, renamed into place, so an identical
    checkpoint is not written twice (frozen pretrained encoders make them large). The next save replaces
    `source` by a new file and leaves `path` as it is. Where links are not supported, a second write."""
    tmp = path.with_name(f".{path.name}.link.tmp")
    try:
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        save_checkpoint(state, path)


class Checkpointer:
    """Writes last.ckpt, best.ckpt and the most recent `keep_last_k` per-epoch snapshots (epoch-NNN.ckpt).

    Under torchrun every process calls `save` at the same points and rank 0 alone writes; `save` returns on every
    process once the files are in place (a barrier), so no process exits, e.g. after SIGTERM, while rank 0 still
    writes the checkpoint it will be resumed from."""

    def __init__(self, folder: str | Path, keep_last_k: int, extra: dict[str, Any]):
        self.folder, self.keep_last_k, self.extra = Path(folder), keep_last_k, extra
        if not distributed.is_main():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(".*.tmp"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)

    def save(self, state: dict[str, Any], *, best: bool = False, epoch_end: int | None = None) -> None:
        """Write last.ckpt (and best.ckpt, epoch-NNN.ckpt); a write that fails (disk full, quota, permissions)
        is one line saying that the previous files are intact and how to continue."""
        if distributed.is_main():
            self._write(state, best, epoch_end)
        distributed.barrier()

    def _write(self, state: dict[str, Any], best: bool, epoch_end: int | None) -> None:
        state = {**state, **self.extra}
        last = self.folder / "last.ckpt"
        # best.ckpt first: a process killed between the two writes then never leaves a last.ckpt whose best
        # epoch has no best.ckpt (a resumed run that improves no further would have no best model to evaluate)
        first = path = self.folder / "best.ckpt" if best else last
        try:
            save_checkpoint(state, path)
            if best:
                path = last
                _same_file(first, last, state)
            if epoch_end is not None and self.keep_last_k > 0:
                path = self.folder / f"epoch-{epoch_end:03d}.ckpt"
                _same_file(first, path, state)
                for old in sorted(self.folder.glob("epoch-*.ckpt"))[:-self.keep_last_k]:
                    old.unlink(missing_ok=True)
        except (OSError, RuntimeError) as err:  # torch.save reports a failed write as RuntimeError
            reason = getattr(err, "strerror", None) or _first_line(err)
            raise CrossmodalError(f"cannot write {path} ({reason}); the checkpoints written before are intact; "
                                  f"free some space and continue with: cmtrain resume={self.folder.parent}") from None
