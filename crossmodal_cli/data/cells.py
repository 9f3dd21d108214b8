"""In-memory image and audio cells: what a DataFrame may hold in place of a file path, and how it is read.

A table read from a pandas DataFrame (`load_table(frames=...)`, the Python API) may hold, in its image column, a
path, the bytes of an encoded image file (PNG, JPEG, ...) or a `PIL.Image.Image`, and in its audio column a path or
the bytes of an encoded audio file (WAV, FLAC, ...). Bytes are decoded exactly as the same file on disk would be
(`open_binary` gives the decoders a file-like object instead of a path); a PIL image is taken as it is (its pixels,
decoded in full, then turned upright, converted and resized as a file's). Such cells have no path, size or
modification time, so the validation cache skips them and the other caches key them by their content
(`cachefiles.input_identity`).
"""
from __future__ import annotations

import io
from contextlib import contextmanager
from typing import BinaryIO, Iterator, Union

from PIL import Image

from crossmodal_cli.data.csvfile import printable

MEMORY_TYPES = (bytes, Image.Image)  # what an image or audio cell may hold besides a path
Cell = Union[str, bytes, Image.Image]  # an image or audio cell of a table: a resolved path or an in-memory input


def in_memory(value: object) -> bool:
    """True for an in-memory input (encoded bytes or a PIL image), False for a path."""
    return isinstance(value, MEMORY_TYPES)


def describe_cell(value: object, limit: int | None = None) -> str:
    """A cell for a message: '<1,234 bytes>' or '<PIL image RGB 64x48>' for an in-memory input; a path as it is,
    or with `limit` as one printable line of at most `limit` characters."""
    if isinstance(value, bytes):
        return f"<{len(value):,} bytes>"
    if isinstance(value, Image.Image):
        return f"<PIL image {value.mode} {value.width}x{value.height}>"
    return str(value) if limit is None else printable(value, limit)


@contextmanager
def open_binary(source: str | bytes) -> Iterator[BinaryIO]:
    """A file at `source` opened for reading in binary, or encoded bytes as a file-like object."""
    if isinstance(source, bytes):
        yield io.BytesIO(source)
    else:
        with open(source, "rb") as f:
            yield f


def stream_size(f: BinaryIO) -> int:
    """The length of a seekable binary stream (the file's size); the position is left at the start."""
    size = f.seek(0, io.SEEK_END)
    f.seek(0)
    return size
