"""Check every input a Table points to (image and audio files, texts), before any training starts.

One pass per modality over the unique paths of all splits, in a thread pool (decoders release the GIL): the path
must lie under the data root (unless allowed), be a regular file and decode in full — every compressed byte of an
image, every frame of an audio file — with the same helpers as `modalities.load_image` / `load_audio`, so a file
that passes also loads, and a damaged one is found before the first step. Files that passed are remembered in a
small JSON cache per data root, keyed by (path, size, mtime), so an unchanged data set is re-checked in a second.
A failure is handled by `on_missing`: stop with one line naming the CSV, the column, the first rows and their
count, or drop / mask the rows.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import struct
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd
from PIL import Image

from crossmodal_cli.data.modalities import (AUDIO_ERRORS, DECODE_ERRORS, DamagedAudio, convertible, is_large,
                                            open_image, read_audio, too_large_reason)
from crossmodal_cli.data.csvfile import describe_rows, outside_root, printable
from crossmodal_cli.data.table import ON_MISSING, Table
from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)

OUTSIDE_ROOT = "outside data.root (set data.allow_outside_root=true to allow)"
CACHE_VERSION = 3  # bump when a probe becomes stricter, so files passed by the old probe are checked again
BATCH = 256        # paths per thread-pool task: one future per file would cost more than a cached check
PNG_INFLATE_STEP = 1 << 20  # bytes inflated at a time by png_problem, then discarded


Probe = Callable[[str], "tuple[str | None, bool]"]  # path -> (reason it is unusable or None, over the size warning)


def png_problem(path: str) -> str | None:
    """Why a PNG's stream is damaged where Pillow's decoder does not look, or None: every chunk's CRC through IEND
    (`load()` skips them), and the IDAT data inflated to its end, so its Adler-32 checksum is compared (Pillow
    stops inflating once it has every row, before the checksum: about 1 in 200 single-bit flips in IDAT then
    decodes without an error, to wrong pixels). The inflated bytes are discarded as they come."""
    inflate = zlib.decompressobj()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.read(8)  # the signature, which Pillow has read
        while True:
            head = f.read(8)
            if len(head) < 8:
                return "truncated PNG: no IEND chunk"
            length, kind = struct.unpack(">I4s", head)
            name = kind.decode("latin-1")
            if f.tell() + length + 4 > size:  # checked before reading: a damaged length may claim gigabytes
                return f"truncated PNG: its {name} chunk is cut short"
            data, crc = f.read(length), f.read(4)
            if zlib.crc32(data, zlib.crc32(kind)) != struct.unpack(">I", crc)[0]:
                return f"damaged PNG: its {name} chunk fails its CRC"
            if kind == b"IEND":
                break
            if kind == b"IDAT" and not inflate.eof:
                try:
                    while not inflate.eof:  # until this chunk is consumed and no output is pending
                        out = inflate.decompress(data, PNG_INFLATE_STEP)
                        data = inflate.unconsumed_tail
                        if not data and len(out) < PNG_INFLATE_STEP:
                            break
                except zlib.error as err:
                    return f"damaged PNG: its pixel data does not inflate ({err})"
    return None if inflate.eof else "damaged PNG: its pixel data ends early"


def probe_image(path: str) -> tuple[str | None, bool]:
    """(None, large) if the image decodes, else (the reason, False). `large`: more than Image.MAX_IMAGE_PIXELS
    pixels; such an image is decoded (and counted); one over Pillow's hard limit (twice that) is unusable.

    Every compressed byte is decoded, since damaged pixel data can sit behind intact headers and checksums:
    `load()` after `draft` (JPEG: at 1/8 scale, which still entropy-decodes every byte, so truncated or damaged
    scans are caught; other formats ignore `draft` and decode in full). A PNG's stream is checked first
    (`png_problem`: chunk CRCs, IDAT inflated through its checksum), then decoded in full by Pillow, as
    `load_image` decodes it. A pixel mode `to_rgb` cannot convert is unusable.
    """
    try:
        with open_image(path) as img:
            if not convertible(img.mode):
                return f"unsupported image mode {img.mode}", False
            large = is_large(img)
            if img.format == "PNG":
                reason = png_problem(path)
                if reason:
                    return f"cannot decode image ({reason})", False
            img.draft("RGB", (64, 64))
            img.load()
    except Image.DecompressionBombError:
        return too_large_reason(), False
    except DECODE_ERRORS as err:  # a damaged or malformed file, reported with its reason
        return f"cannot decode image ({type(err).__name__}: {err})", False
    return None, large


def probe_audio(path: str) -> tuple[str | None, bool]:
    """(None, False) if every frame the audio file's header declares decodes, else (the reason, False).

    The frames are read (in blocks, `modalities.read_audio`), not only the header: a truncated or damaged body
    (a FLAC frame failing its checksum, a WAV shorter than its data chunk) is refused here, not at load time.
    """
    try:
        read_audio(path, keep=False)
    except DamagedAudio as err:
        return str(err), False
    except AUDIO_ERRORS as err:
        return f"cannot decode audio ({type(err).__name__}: {err})", False
    return None, False


PROBES: dict[str, Probe] = {"image": probe_image, "audio": probe_audio}


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


def _problem(path: str, root: str, modality: str, allow_outside_root: bool,
             cache: CheckCache) -> tuple[str | None, list[int] | None, bool]:
    """(reason the file is unusable or None, [size, mtime_ns] when it was probed now and passed, large image)."""
    if not path:
        return "blank path", None, False
    if not allow_outside_root and outside_root(path, root):
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


def _check_files(frames: list[pd.DataFrame], modality: str, workers: int, allow_outside_root: bool,
                 cache_dir: str | None) -> dict[tuple[str, str], str | None]:
    """{(path, root): reason or None} for every distinct path of `modality` in `frames`."""
    pairs = list(dict.fromkeys(pair for f in frames for pair in zip(f[modality], f["root"])))
    caches = {root: CheckCache(cache_dir, root) for root in {root for _, root in pairs}}

    def run(batch):
        return [_problem(path, root, modality, allow_outside_root, caches[root]) for path, root in batch]

    batches = [pairs[i:i + BATCH] for i in range(0, len(pairs), BATCH)]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(batches)))) as pool:
        results = [r for batch in pool.map(run, batches) for r in batch]
    problems = {}
    large = sum(result[2] for result in results)
    for (path, root), (reason, passed, _) in zip(pairs, results):
        problems[(path, root)] = reason
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
    """error mode: one line naming the CSV, column, first lines and count of the first modality with problems."""
    for modality in table.modalities:
        bad = pd.concat([rows.assign(reason=reasons[s][modality])[reasons[s][modality].notna()]
                         for s, rows in table.splits.items() if s in reasons]).sort_values(["source", "line"])
        if bad.empty:
            continue
        first = bad.iloc[0]
        shown = printable(first[modality], 200) if modality != "text" else ""
        raise CrossmodalError(
            f"{first['source']}: column '{printable(table.columns.get(modality, columns[modality]), 60)}': "
            f"{describe_rows(bad[bad['source'] == first['source']])} with unusable {modality} input, e.g. line "
            f"{first['line']}: {shown or '(blank)'}: {printable(first['reason'], 300)} "
            f"(fix the rows, or set data.on_missing=drop or zero)")


def check_inputs(table: Table, columns: Mapping[str, str], on_missing: str, workers: int = 16, *,
                 allow_outside_root: bool = False, cache_dir: str | None = None) -> dict:
    """Check every row's inputs; apply `on_missing` and return a report {split: {modality or reason: rows affected}}.

    The report starts from `table.report` (rows load_table dropped, e.g. `unknown_label`).
    error: raise CrossmodalError naming the CSV, column, first lines and count of the first bad modality.
    drop:  remove rows with any unusable input.
    zero:  keep them; column `has_<modality>` is False where the input is missing (the model masks it out);
           rows with no usable input at all are dropped.
    A path outside the data root is unusable unless `allow_outside_root`. `cache_dir` (None = no cache) holds the
    files that passed before.
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
        problems = _check_files(list(frames.values()), modality, workers, allow_outside_root, cache_dir)
        for s, rows in frames.items():
            reasons[s][modality] = pd.Series([problems[pair] for pair in zip(rows[modality], rows["root"])],
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
