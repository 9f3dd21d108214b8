"""Check every input a Table points to (image and audio files or in-memory cells, texts) before training starts.

One pass per modality over the unique paths of all splits, in a thread pool (decoders release the GIL): the path
must lie under the data root (unless allowed), be a regular file and decode in full (`probes.py`) — every
compressed byte of an image, every frame of an audio file — with the same helpers as `modalities.load_image` /
`load_audio`, so a file that passes also loads, and a damaged one is found before the first step. Files that passed are remembered in a
small JSON cache per data root, keyed by (path, size, mtime), so an unchanged data set is re-checked in a second.
In-memory cells of a DataFrame (bytes, PIL images: `cells.py`) are decoded by the same probes, never cached. A
failure is handled by `on_missing`: stop with one line naming the CSV (or DataFrame), the column, the first rows
and their count, or drop / mask the rows.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping

import pandas as pd
from PIL import Image

from crossmodal_cli.data.cells import describe_cell, in_memory
from crossmodal_cli.data.columns import TABULAR
from crossmodal_cli.data.csvfile import describe_rows, outside_root, printable, where
from crossmodal_cli.data.probes import PROBES
from crossmodal_cli.data.table import ON_MISSING, Table
from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)

OUTSIDE_ROOT = "outside data.root (set data.allow_outside_root=true to allow)"
CACHE_VERSION = 3  # bump when a probe becomes stricter, so files passed by the old probe are checked again
BATCH = 256        # paths per thread-pool task: one future per file would cost more than a cached check

class CheckCache:
    """Files of one data root that passed a probe: {"image:/abs/path": [size, mtime_ns]} in a JSON file.

    Only successes are stored; a file whose size or mtime changed is probed again. An unreadable or corrupt cache
    file is ignored, and a cache that cannot be written only costs speed: neither is an error.
    """

    def __init__(self, folder: str | None, root: str):
        self.root = root
        digest = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:20]
        self.file = Path(folder).expanduser() / f"{digest}.json" if folder else None
        self.entries = self._read()
        self.passed: dict[str, list[int]] = {}
        self.failed: set[str] = set()

    def _read(self) -> dict:
        if self.file is None:
            return {}
        try:
            stored = json.loads(self.file.read_text(encoding="utf-8"))
            entries = stored["entries"]
            if (stored["version"], stored["root"]) == (CACHE_VERSION, self.root) and isinstance(entries, dict):
                return entries
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return {}

    def passed_before(self, key: str, info: os.stat_result) -> bool:
        return self.entries.get(key) == [info.st_size, info.st_mtime_ns]

    def write(self) -> None:
        """Merge this run's results into the file (re-read, so concurrent runs lose little), atomically."""
        if self.file is None or not (self.passed or self.failed & self.entries.keys()):
            return
        entries = {**self._read(), **self.passed}
        for key in self.failed:
            entries.pop(key, None)
        tmp = None
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.file.name}.", suffix=".tmp", dir=self.file.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": CACHE_VERSION, "root": self.root, "entries": entries}, f)
            os.replace(tmp, self.file)
        except OSError as err:
            log.warning("cannot write the validation cache %s (%s); files will be checked again next time",
                        self.file, err)
            if tmp:
                Path(tmp).unlink(missing_ok=True)


def _problem(path: str | bytes | Image.Image, root: str, modality: str, allow_outside_root: bool,
             cache: CheckCache) -> tuple[str | None, list[int] | None, bool]:
    """(reason the input is unusable or None, [size, mtime_ns] when a file was probed now and passed, large image).
    An in-memory cell is probed as it is; a path outside `root` ('' for a DataFrame's rows: none) is unusable
    unless allowed."""
    if in_memory(path):
        if isinstance(path, bytes) and not path:
            return "empty bytes", None, False
        reason, large = PROBES[modality](path)
        return reason, None, large
    if not path:
        return "blank path", None, False
    if not allow_outside_root and root and outside_root(path, root):
        return OUTSIDE_ROOT, None, False
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "file not found", None, False
    except (OSError, ValueError) as err:
        return f"cannot access ({getattr(err, 'strerror', None) or err})", None, False
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file", None, False
    if cache.passed_before(f"{modality}:{path}", info):
        return None, None, False
    reason, large = PROBES[modality](path)
    return reason, (None if reason else [info.st_size, info.st_mtime_ns]), large


def cell_key(value: object) -> object:
    """What tells one input of a check apart: a path, or the identity of an in-memory cell (PIL images are not
    hashable; the frames hold every cell for the whole check)."""
    return value if isinstance(value, str) else ("memory", id(value))


def _check_files(frames: list[pd.DataFrame], modality: str, workers: int, allow_outside_root: bool,
                 cache_dir: str | None) -> dict[tuple[object, str], str | None]:
    """{(cell_key, root): reason or None} for every distinct input of `modality` in `frames`."""
    cells = {}
    for f in frames:
        for value, root in zip(f[modality], f["root"]):
            cells.setdefault((cell_key(value), root), value)
    pairs = list(cells)
    caches = {root: CheckCache(cache_dir, root) for root in {root for _, root in pairs}}

    def run(batch):
        return [_problem(cells[pair], pair[1], modality, allow_outside_root, caches[pair[1]]) for pair in batch]

    batches = [pairs[i:i + BATCH] for i in range(0, len(pairs), BATCH)]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(batches)))) as pool:
        results = [r for batch in pool.map(run, batches) for r in batch]
    problems = {}
    large = sum(result[2] for result in results)
    for (path, root), (reason, passed, _) in zip(pairs, results):
        problems[(path, root)] = reason
        if not isinstance(path, str):
            continue  # an in-memory cell: never cached
        key = f"{modality}:{path}"
        if passed:
            caches[root].passed[key] = passed
        elif reason:
            caches[root].failed.add(key)
    for cache in caches.values():
        cache.write()
    log.info("checked %d %s files", len(pairs), modality)
    if large:
        log.warning("%d %s files have more than PIL.Image.MAX_IMAGE_PIXELS (%s) pixels: they are used, but decoding "
                    "them is slow; downscale them to speed up loading", large, modality, f"{Image.MAX_IMAGE_PIXELS:,}")
    return problems


def _raise_first(table: Table, reasons: dict, columns: Mapping[str, str]) -> None:
    """error mode: one line naming the CSV (or DataFrame), column, first lines (rows) and count of the first
    modality with problems."""
    for modality in table.modalities:
        bad = pd.concat([rows.assign(reason=reasons[s][modality])[reasons[s][modality].notna()]
                         for s, rows in table.splits.items() if s in reasons]).sort_values(["source", "line"])
        if bad.empty:
            continue
        first = bad.iloc[0]
        shown = describe_cell(first[modality], 200) if modality not in ("text", "tabular") else ""
        raise CrossmodalError(
            f"{first['source']}: column '{printable(table.columns.get(modality, columns[modality]), 60)}': "
            f"{describe_rows(bad[bad['source'] == first['source']])} with unusable {modality} input, e.g. "
            f"{where(first['source'], first['line'])}: {shown or '(blank)'}: {printable(first['reason'], 300)} "
            f"(fix the rows, or set data.on_missing=drop or zero)")


def check_inputs(table: Table, columns: Mapping[str, str], on_missing: str, workers: int = 16, *,
                 allow_outside_root: bool = False, cache_dir: str | None = None) -> dict:
    """Check every row's inputs; apply `on_missing` and return a report {split: {modality or reason: rows affected}}.

    The report starts from `table.report` (rows load_table dropped, e.g. `unknown_label`).
    error: raise CrossmodalError naming the CSV, column, first lines and count of the first bad modality.
    drop:  remove rows with any unusable input.
    zero:  keep them; column `has_<modality>` is False where the input is missing (the model masks it out);
           rows with no usable input at all are dropped.
    A path outside the data root is unusable unless `allow_outside_root` (a DataFrame's rows have no root). `cache_dir`
    (None = no cache) holds the files that passed before; in-memory cells are always checked.
    """
    if on_missing not in ON_MISSING:
        raise CrossmodalError(f"data.on_missing={on_missing}: use error, drop or zero")
    frames = {s: rows for s, rows in table.splits.items() if not rows.empty}
    reasons: dict = {s: {} for s in frames}
    for modality in table.modalities:
        if modality == "text":
            for s, rows in frames.items():
                reasons[s][modality] = rows["text"].map(lambda t: None if t else "blank text")
            continue
        if modality == "tabular":
            for s, rows in frames.items():
                cells = rows[[c for c in rows.columns if str(c).startswith(TABULAR)]]
                blank = (cells == "").all(axis=1)
                reasons[s][modality] = blank.map({True: "every tabular cell blank", False: None})
            continue
        problems = _check_files(list(frames.values()), modality, workers, allow_outside_root, cache_dir)
        for s, rows in frames.items():
            reasons[s][modality] = pd.Series([problems[(cell_key(value), root)]
                                              for value, root in zip(rows[modality], rows["root"])],
                                             index=rows.index, dtype=object)
    if on_missing == "error":
        _raise_first(table, reasons, columns)
    report: dict = {s: dict(counts) for s, counts in table.report.items()}
    for split, by_modality in reasons.items():
        rows = table.splits[split]
        usable = pd.concat([r.isna() for r in by_modality.values()], axis=1)
        report.setdefault(split, {}).update({m: int(r.notna().sum()) for m, r in by_modality.items()
                                             if r.notna().any()})
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
