"""Decoding an image or audio file (a path, encoded bytes, or a PIL image: cells.py) without torch: the pixels,
upright and fitted to the model's size, as uint8 [3, H, W]; every frame of an audio file. Shared by the data
pipeline (modalities.py turns the results into tensors), the file checks (probes.py) and the torch-free runtime of
an exported bundle (crossmodal_cli/runtime/), so all three read a file alike.

A file whose pixels or frames cannot all be decoded is an error here, never an image or waveform of zeros: a second
`load()` of a Pillow image whose first load failed returns the half-filled buffer without an error, and libsndfile
stops quietly where a truncated WAV or AIFF body ends.
"""
from __future__ import annotations

import io
import struct
import warnings
import zlib
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import numpy as np
import soundfile as sf
from PIL import Image, ImageOps

from crossmodal_cli.data.cells import describe_cell, open_binary, stream_size
from crossmodal_cli.errors import CrossmodalError

# What Pillow raises for a malformed, damaged or unsupported image file (decoders: OSError; format plugins: the rest;
# zlib.error from compressed chunks; RuntimeError for the formats a plugin identifies but cannot decode, e.g. some
# DDS variants, whose "not implemented" error subclasses it); anything else is a bug, not a bad file.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, RuntimeError,
                 struct.error, zlib.error)
# What parsing an EXIF block can raise; only caught once the pixels are loaded, so none of it is a pixel error.
EXIF_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)
# What soundfile raises for a malformed or damaged audio file (LibsndfileError is a RuntimeError).
AUDIO_ERRORS = (RuntimeError, OSError, ValueError, EOFError)
AUDIO_BLOCK = 1 << 16  # frames per read: a damaged header claiming billions of frames never allocates them at once
UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF, 0x7FFFF000)  # data sizes streaming writers leave (ffmpeg: -1, SoX: 0x7ffff000)



def too_large_reason() -> str:
    """Why an image over Pillow's hard limit (2 x Image.MAX_IMAGE_PIXELS) is unusable."""
    return (f"image too large to decode (over 2 x PIL.Image.MAX_IMAGE_PIXELS = {2 * Image.MAX_IMAGE_PIXELS:,} "
            f"pixels); downscale it")


@contextmanager
def open_image(source: str | bytes | Image.Image) -> Iterator[Image.Image]:
    """Image.open, without Pillow's DecompressionBombWarning while the image is used (validation.py counts such
    images and logs one line per run instead); over the hard limit it still raises Image.DecompressionBombError.
    A PIL image is yielded as it is (and left open).

    (Before Python 3.14 catch_warnings is not thread-safe: in validation.py's thread pool the filter may outlive
    the block, which only silences the same warning.)
    """
    if isinstance(source, Image.Image):
        yield source
        return
    with warnings.catch_warnings(action="ignore", category=Image.DecompressionBombWarning):
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            yield img


def is_large(img: Image.Image) -> bool:
    """Over Image.MAX_IMAGE_PIXELS (but under the hard limit, or it would not have opened): decoded, slowly."""
    return Image.MAX_IMAGE_PIXELS is not None and img.width * img.height > Image.MAX_IMAGE_PIXELS


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode as 8-bit RGB. 16-bit grey (I;16*, and I, taken as 16-bit) keeps its top 8 bits; float (F) is
    scaled by 255 when within [0, 1], else clipped to 0..255; every other mode goes through Pillow's convert."""
    if img.mode.startswith("I;16") or img.mode == "I":
        grey = (np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        img = Image.fromarray(grey)
    elif img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float32))
        if values.size and values.min() >= 0 and values.max() <= 1:
            values = values * 255
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow warns when a palette with transparency goes straight to RGB
    return img if img.mode == "RGB" else img.convert("RGB")


@lru_cache(maxsize=None)
def convertible(mode: str) -> bool:
    """Whether `to_rgb` handles this mode (tried on a 1x1 image), so the file check agrees with loading."""
    try:
        to_rgb(Image.new(mode, (1, 1)))
    except (ValueError, OSError):
        return False
    return True


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (cameras store portrait photos sideways); damaged EXIF is
    ignored rather than making the image unusable.

    The pixels are loaded first, outside the EXIF `try`: a decoding error must propagate, since a second `load()`
    of the same image returns its half-filled (zeroed) buffer without an error.
    """
    img.load()
    try:
        return ImageOps.exif_transpose(img)
    except EXIF_ERRORS:  # a bad EXIF block: the pixels, already decoded, are fine
        return img


RESIZE_MODES = ("squash", "shorter_side_center_crop")


def fit(img: Image.Image, size: int, resize: str) -> Image.Image:
    """`squash`: resize to size x size (the aspect ratio changes); `shorter_side_center_crop`: scale the shorter
    side to `size` (keeping the aspect ratio) and cut the centred size x size square, as pretrained image models
    were trained."""
    if resize == "squash":
        return img.resize((size, size), Image.BILINEAR)
    width, height = img.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    img = img.resize(new, Image.BILINEAR)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return img.crop((left, top, left + size, top + size))

def image_pixels(source: str | bytes | Image.Image, size: int, resize: str = "squash") -> np.ndarray:
    """RGB image, turned upright (EXIF) and fitted to size x size (`fit`): uint8 [3, size, size]. `source`: a path,
    encoded bytes, or a PIL image (used as it is: never drafted, which would change the caller's image)."""
    try:
        with open_image(source) as img:
            if img is not source:
                img.draft("RGB", (size, size))  # JPEG: decode at reduced scale when much larger than needed
            img = fit(to_rgb(upright(img)), size, resize)
    except Image.DecompressionBombError:
        raise CrossmodalError(f"{describe_cell(source)}: cannot read image ({too_large_reason()})") from None
    except DECODE_ERRORS as err:  # a damaged or malformed file (validation.py catches the same)
        raise CrossmodalError(f"{describe_cell(source)}: cannot read image ({type(err).__name__}: {err})") from None
    return np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))


class DamagedAudio(OSError):
    """An audio file with fewer frames (or data bytes) than its header declares, or none at all."""


def _iff_shortfall(source: str | bytes) -> str | None:
    """Why a WAV (RIFF/RIFX) or AIFF file holds less sound data than its header declares; None when it does not,
    or is another format.

    libsndfile shortens the frame count of such a file to the bytes present and reads it without an error. A data
    size in UNKNOWN_DATA_SIZES is what writers that cannot seek back (pipes) leave: it declares nothing. A shortfall
    of less than one frame (a missing pad byte) loses no sample.
    """
    with open_binary(source) as f:
        size = stream_size(f)
        head = f.read(12)
        order = {(b"RIFF", b"WAVE"): "<", (b"RIFX", b"WAVE"): ">", (b"FORM", b"AIFF"): ">",
                 (b"FORM", b"AIFC"): ">"}.get((head[:4], head[8:12]))
        if order is None:
            return None
        frame_bytes, pos = 0, 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, length = struct.unpack(order + "4sI", f.read(8))
            if chunk == b"fmt ":  # WAVE: block_align, the bytes of one frame, at offset 12
                body = f.read(14)
                frame_bytes = struct.unpack(order + "H", body[12:14])[0] if len(body) == 14 else 0
            elif chunk == b"COMM":  # AIFF: channels at 0, bits per sample at 6
                body = f.read(8)
                if len(body) == 8:
                    channels, _, bits = struct.unpack(">hIh", body)
                    frame_bytes = max(channels, 0) * ((max(bits, 0) + 7) // 8)
            elif chunk in (b"data", b"SSND"):
                present = size - pos - 8
                if length in UNKNOWN_DATA_SIZES or not frame_bytes or length - present < frame_bytes:
                    return None
                return (f"audio file truncated: its {chunk.decode().strip()} chunk declares {length:,} bytes of sound, "
                        f"the file holds {present:,}")
            pos += 8 + length + (length & 1)
    return None


def read_audio(source: str | bytes, keep: bool = True) -> tuple[np.ndarray, int]:
    """(every frame of an audio file, float32 [frames, channels] — or [0, channels] when not `keep`, for a check
    that only needs them decoded —, its sample rate). `source`: a path or an encoded file's bytes.

    Raises DamagedAudio for a file without frames or whose body holds fewer frames than its header declares
    (truncated or damaged: libsndfile returns such a short read without an error), and soundfile's own errors
    (AUDIO_ERRORS) for a file it cannot decode, e.g. a FLAC frame that fails its checksum.
    """
    shortfall = _iff_shortfall(source)
    if shortfall:
        raise DamagedAudio(shortfall)
    with sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source) as f:
        rate, channels, declared = f.samplerate, f.channels, f.frames
        blocks, read = [], 0
        while read < declared:
            block = f.read(min(AUDIO_BLOCK, declared - read), dtype="float32", always_2d=True)
            if not len(block):
                break
            read += len(block)
            if keep:
                blocks.append(block)
    if declared <= 0:
        raise DamagedAudio("audio file has no samples")
    if read < declared:
        raise DamagedAudio(f"audio file truncated or damaged: only {read:,} of the {declared:,} frames its header "
                           f"declares could be read")
    return (np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)), rate

