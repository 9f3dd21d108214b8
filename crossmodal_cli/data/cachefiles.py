"""What the on-disk caches share: the identity of one input, the key of an entry, and the lock around building it.

The preprocessed-image cache (`preprocessed.py`) and the frozen-feature cache (`crossmodal_cli.features`) key an
entry by a digest of what its contents depend on (`entry_key`): the settings and the identity of every input
(`input_identity`: a file's path, size and modification time, so a changed file gives a new key; an in-memory
input's content digest). Entries are built in a temporary folder and renamed into place under a file lock
(`locked`), so concurrent jobs that need the same entry build it once. A leaf module: standard library only.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

VERSION = 1
ORIENTATION = 0x0112  # the EXIF tag `decoding.upright` turns an image by


def input_identity(modality: str, value: Any) -> str:
    """What makes one input distinct: the text itself (a row's tabular cells likewise), a file's path, size and modification time, or the content
    digest of an in-memory input (`content_digest`)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        return f"{modality}:memory:{content_digest(value)}"
    if modality in ("text", "tabular") or not value:  # tabular: the row's cells as one JSON list
        return f"{modality}:{value}"
    try:
        info = os.stat(value)
        return f"{modality}:{value}:{info.st_size}:{info.st_mtime_ns}"
    except OSError:
        return f"{modality}:{value}:missing"


def content_digest(value: Any) -> str:
    """A digest of everything decoding an in-memory input reads: an encoded file's bytes; for a PIL image (duck-typed:
    this module imports no Pillow) its mode, size, palette, transparency, EXIF orientation and pixels, which are all
    `modalities.load_image` reads of it."""
    digest = hashlib.sha256()
    if isinstance(value, (bytes, bytearray, memoryview)):
        digest.update(b"bytes\0")
        digest.update(value)
        return digest.hexdigest()
    try:
        orientation = value.getexif().get(ORIENTATION)
    except Exception:  # a damaged EXIF block, which turning the image ignores: keyed apart from every orientation
        orientation = "unreadable"
    palette = value.palette.mode if value.palette is not None else None
    header = [value.mode, list(value.size), palette, repr(value.info.get("transparency")), repr(orientation)]
    digest.update(b"image\0" + json.dumps(header).encode() + b"\0")
    digest.update(bytes(value.getpalette(None) or []) if palette else b"")
    digest.update(b"\0")
    digest.update(value.tobytes())
    return digest.hexdigest()


def entry_key(description: Mapping[str, Any], identities: Iterable[str]) -> str:
    """The cache key: a digest of the entry's description (config, weights digest, input settings) and of every
    input identity (sorted, so the order of rows and the split do not matter)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps({"version": VERSION, **description}, sort_keys=True, default=str).encode())
    for identity in sorted(set(identities)):
        digest.update(identity.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive file lock on `path` (created if absent) for the duration of the block; shared by the caches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
