"""The preprocessed-image cache (`data.cache=preprocessed`): every image decoded and resized once, for every epoch,
run and sweep job, into one memory-mapped uint8 array.

Decoding and resizing a JPEG costs milliseconds per image and per epoch; copying its 224 x 224 x 3 bytes out of
a memory-mapped array costs microseconds. The entry for a set of images lives in
`data.cache_dir/images/<key>/` (`images.npy` [K, 3, S, S] uint8 and `index.json`: input identity -> row), where the
key hashes the image size, the resize mode and the identity of every distinct image (path, size and modification
time; an in-memory image's content digest: `cachefiles.input_identity`), so a changed file, size or resize mode gives
a new entry and a stale one is never read. Entries are built in a temporary folder and renamed into place under a
file lock (`cachefiles.locked`): the jobs of a sweep that need the same images wait for the first and then share
one copy through the page cache.
Decoding runs in a thread pool (Pillow releases the GIL while it decodes and resizes).

Hand-written because no library caches decoded, resized images keyed by file identity this way; the array is a
plain `.npy` file opened with `np.load(mmap_mode="r")`.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal_cli.data.cachefiles import entry_key, input_identity, locked
from crossmodal_cli.data.cells import Cell
from crossmodal_cli.data.modalities import load_image
from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)


class ImageEntry:
    """One cached set of images: `images` [K, 3, S, S] uint8 (memory-mapped), `rows` identity -> row."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.rows: dict[str, int] = json.loads((folder / "index.json").read_text())
        self.images = np.load(folder / "images.npy", mmap_mode="r")

    def positions(self, identities: Sequence[str]) -> np.ndarray:
        return np.asarray([self.rows[i] for i in identities], dtype=np.int64)


def cached_images(paths: Sequence[Cell], present: np.ndarray, size: int, resize: str, cache_dir: str | Path,
                  threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images [K, 3, S, S] uint8 memory-mapped, positions [N]: each row's index into it, -1 where the row has no
    image). `paths`: each row's image cell (a path, or in-memory bytes / PIL image). Builds the entry on first use."""
    identities = [input_identity("image", p) if has else "" for p, has in zip(paths, present)]
    distinct = sorted({i for i in identities if i})
    if not distinct:
        return np.zeros((0, 3, size, size), np.uint8), np.full(len(paths), -1, np.int64)
    by_identity = {identity: path for identity, path, has in zip(identities, paths, present) if has}
    key = entry_key({"kind": "preprocessed-images", "size": size, "resize": resize}, distinct)
    root = Path(cache_dir).expanduser() / "images"
    folder = root / key
    try:
        with locked(root / f".{key}.lock"):
            if not (folder / "index.json").is_file():
                _build(folder, [by_identity[i] for i in distinct], distinct, size, resize, threads)
            else:
                log.info("preprocessed images: reusing %d images (%d px, %s) from %s", len(distinct), size, resize,
                         folder)
    except OSError as err:  # a read-only or full cache folder is the user's to fix, in one line
        raise CrossmodalError(f"data.cache_dir={cache_dir}: cannot write the preprocessed images there "
                              f"({err.strerror or err}); choose a writable folder with enough space, or set "
                              f"data.cache=null") from None
    entry = ImageEntry(folder)
    positions = np.asarray([entry.rows[i] if i else -1 for i in identities], dtype=np.int64)
    return entry.images, positions


def _build(folder: Path, paths: list[Cell], identities: list[str], size: int, resize: str,
           threads: int | None) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(len(paths), 3, size, size))

        def store(i: int) -> None:
            images[i] = load_image(paths[i], size, resize).numpy()

        with ThreadPoolExecutor(max_workers=threads or max(1, os.cpu_count() or 1)) as pool:
            list(pool.map(store, range(len(paths))))
        images.flush()
        (tmp / "index.json").write_text(json.dumps({ident: i for i, ident in enumerate(identities)}))
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("preprocessed images: decoded %d images once (%d px, %s) into %s", len(paths), size, resize, folder)
