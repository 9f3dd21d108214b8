"""The generated demo data set: a task no single modality can solve.

Each row has a grey shape (circle, square, triangle) in the image, a caption naming a colour (red, green, blue)
and a tone whose pitch encodes the same colour. The label is (shape + colour) mod 3, so the shape alone or the
colour alone says nothing about it (exactly chance), while image+text or image+audio determine it fully.
"""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue")
LABELS = ("alpha", "beta", "gamma")
TONES_HZ = (300.0, 600.0, 1200.0)
TEMPLATES = ("a {c} object", "something painted {c} here", "colour: {c}", "this one is {c} i think",
             "look, it is {c}", "the {c} kind, apparently")
FILLERS = ("", "", "well,", "hmm", "okay so", "note:")  # prefixes that vary the wording, never the meaning
VERSION = 2


def _image(rng: np.random.Generator, shape: int, size: int) -> Image.Image:
    """Dark noisy background with one light-grey shape of random size, brightness and position (no colour)."""
    img = Image.fromarray(rng.integers(0, 60, (size, size, 3), dtype=np.uint8))
    extent = rng.uniform(0.35, 0.7) * (size - 1)
    x0, y0 = rng.uniform(0, size - 1 - extent, 2)  # the box's far corner stays on the last pixel at most
    x1, y1 = x0 + extent, y0 + extent
    fill = (int(rng.integers(170, 256)),) * 3
    draw = ImageDraw.Draw(img)
    if SHAPES[shape] == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif SHAPES[shape] == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    return img


def _caption(rng: np.random.Generator, colour: int) -> str:
    """A short caption that names the colour (and never the shape), in one of several wordings."""
    filler = FILLERS[rng.integers(len(FILLERS))]
    text = TEMPLATES[rng.integers(len(TEMPLATES))].format(c=COLOURS[colour])
    return f"{filler} {text}" if filler else text


def _tone(rng: np.random.Generator, colour: int, sample_rate: int, seconds: float) -> np.ndarray:
    """A sine whose frequency names the colour, with jittered pitch, amplitude and phase plus white noise."""
    t = np.arange(int(round(sample_rate * seconds))) / sample_rate
    freq = TONES_HZ[colour] * rng.uniform(0.97, 1.03)
    wave = rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    return np.clip(wave + rng.normal(0, 0.02, t.shape), -1, 1).astype(np.float32)


def _png(img: Image.Image) -> bytes:
    """The image as PNG bytes."""
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _wav(wave: np.ndarray, sample_rate: int) -> bytes:
    """The wave as 16-bit PCM WAV bytes (in memory: soundfile fsyncs real files on close, which is slow)."""
    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _split(rng: np.random.Generator, n: int) -> np.ndarray:
    """70/15/15 train/val/test (counts by rounding), assigned to rows by a seeded permutation."""
    n_val = n_test = int(round(0.15 * n))
    split = np.array(["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test)
    return split[rng.permutation(n)]


def _generate(folder: Path, num_samples: int, seed: int, image_size: int, sample_rate: int, seconds: float) -> None:
    """Write images/, audio/ and demo.csv into `folder` (which must not exist), all driven by one seeded rng."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "audio").mkdir()
    shapes = rng.integers(0, 3, num_samples)
    colours = rng.integers(0, 3, num_samples)
    rows, writes = [], []
    # Content comes from the rng in row order (deterministic); only the file writes, which are dominated by
    # file-system latency, run in parallel.
    with ThreadPoolExecutor(max_workers=8) as pool:
        for i, (shape, colour) in enumerate(zip(shapes.tolist(), colours.tolist())):
            image, audio = f"images/{i:05d}.png", f"audio/{i:05d}.wav"
            writes.append(pool.submit((folder / image).write_bytes, _png(_image(rng, shape, image_size))))
            writes.append(pool.submit((folder / audio).write_bytes,
                                      _wav(_tone(rng, colour, sample_rate, seconds), sample_rate)))
            rows.append({"image_path": image, "text": _caption(rng, colour), "audio_path": audio,
                         "label": LABELS[(shape + colour) % 3]})
        for write in writes:
            write.result()  # re-raise the first failed write, if any
    frame = pd.DataFrame(rows, columns=["image_path", "text", "audio_path", "label"])
    frame["split"] = _split(rng, num_samples)
    frame.to_csv(folder / "demo.csv", index=False)


def _complete(folder: Path, params: dict) -> bool:
    """The demo data set in `folder` is complete and was made with `params`."""
    try:
        return (folder / "demo.csv").is_file() and json.loads((folder / "demo.json").read_text()) == params
    except (OSError, ValueError):
        return False  # an unreadable stamp means: generate again


def ensure_demo(folder: str | Path, *, num_samples: int, seed: int, image_size: int, sample_rate: int,
                seconds: float) -> Path:
    """Generate the demo data set in `folder` unless it is already there with the same parameters; return the CSV
    path (folder/"demo.csv").

    Generation happens in a temporary sibling folder that replaces `folder` only when complete, so an interrupted
    run never leaves a half-written data set that looks complete, and jobs of a parallel sweep that generate it at
    the same time all end up reading one complete copy.
    """
    folder = Path(folder)
    params = {"version": VERSION, "num_samples": num_samples, "seed": seed, "image_size": image_size,
              "sample_rate": sample_rate, "seconds": seconds}
    csv = folder / "demo.csv"
    if _complete(folder, params):
        return csv
    log.info("generating demo data set: %d samples in %s", num_samples, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _generate(tmp, num_samples, seed, image_size, sample_rate, seconds)
        (tmp / "demo.json").write_text(json.dumps(params, indent=2) + "\n")
        if _complete(folder, params):  # a parallel job (hydra/launcher=joblib) finished first: use its copy
            return csv
        if folder.exists():
            os.replace(folder, old)  # a demo with other parameters: set aside, removed below
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _complete(folder, params):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return csv
