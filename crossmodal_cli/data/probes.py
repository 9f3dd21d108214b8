"""Whether one image or audio input decodes in full: the probes `validation.check_inputs` runs on every input.

Each probe decodes with the same helpers as `modalities.load_image` / `load_audio`, so an input that passes also
loads, and reads every compressed byte of an image and every frame of an audio file, so damage behind intact
headers is found before training, not at load time. An input is a path, encoded bytes, or a PIL image (`cells.py`).
"""
from __future__ import annotations

import struct
import zlib
from typing import Callable

from PIL import Image

from crossmodal_cli.data.cells import open_binary, stream_size
from crossmodal_cli.data.decoding import (AUDIO_ERRORS, DECODE_ERRORS, DamagedAudio, convertible, is_large,
                                          open_image, read_audio, too_large_reason)

PNG_INFLATE_STEP = 1 << 20  # bytes inflated at a time by png_problem, then discarded

# A path or an in-memory cell -> (the reason it is unusable or None, over the size warning).
Probe = Callable[["str | bytes | Image.Image"], "tuple[str | None, bool]"]


def png_problem(source: str | bytes) -> str | None:
    """Why a PNG's stream is damaged where Pillow's decoder does not look, or None: every chunk's CRC through IEND
    (`load()` skips them), and the IDAT data inflated to its end, so its Adler-32 checksum is compared (Pillow
    stops inflating once it has every row, before the checksum: about 1 in 200 single-bit flips in IDAT then
    decodes without an error, to wrong pixels). The inflated bytes are discarded as they come."""
    inflate = zlib.decompressobj()
    with open_binary(source) as f:
        size = stream_size(f)
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


def probe_image(source: str | bytes | Image.Image) -> tuple[str | None, bool]:
    """(None, large) if the image decodes, else (the reason, False). `large`: more than Image.MAX_IMAGE_PIXELS
    pixels; such an image is decoded (and counted); one over Pillow's hard limit (twice that) is unusable.

    Every compressed byte is decoded, since damaged pixel data can sit behind intact headers and checksums:
    `load()` after `draft` (JPEG: at 1/8 scale, which still entropy-decodes every byte, so truncated or damaged
    scans are caught; other formats ignore `draft` and decode in full). A PNG's stream is checked first
    (`png_problem`: chunk CRCs, IDAT inflated through its checksum), then decoded in full by Pillow, as
    `load_image` decodes it. A pixel mode `to_rgb` cannot convert is unusable. `source`: a path, encoded bytes, or
    a PIL image (loaded as it is, as `load_image` takes it).
    """
    try:
        with open_image(source) as img:
            if not convertible(img.mode):
                return f"unsupported image mode {img.mode}", False
            large = is_large(img)
            if img is not source:
                if img.format == "PNG":
                    reason = png_problem(source)
                    if reason:
                        return f"cannot decode image ({reason})", False
                img.draft("RGB", (64, 64))
            img.load()
    except Image.DecompressionBombError:
        return too_large_reason(), False
    except DECODE_ERRORS as err:  # a damaged or malformed file, reported with its reason
        return f"cannot decode image ({type(err).__name__}: {err})", False
    return None, large


def probe_audio(source: str | bytes) -> tuple[str | None, bool]:
    """(None, False) if every frame the audio file's header declares decodes, else (the reason, False).

    The frames are read (in blocks, `decoding.read_audio`), not only the header: a truncated or damaged body
    (a FLAC frame failing its checksum, a WAV shorter than its data chunk) is refused here, not at load time.
    `source`: a path or an encoded file's bytes.
    """
    if isinstance(source, Image.Image):
        return "a PIL image is not audio", False
    try:
        read_audio(source, keep=False)
    except DamagedAudio as err:
        return str(err), False
    except AUDIO_ERRORS as err:
        return f"cannot decode audio ({type(err).__name__}: {err})", False
    return None, False


PROBES: dict[str, Probe] = {"image": probe_image, "audio": probe_audio}
