"""The generated demo data set: a task no single modality can solve.

Each row has a grey shape (circle, square, triangle) in the image, a caption naming a colour (red, green, blue)
and a tone whose pitch encodes the same colour. The label is (shape + colour) mod 3, so the shape alone or the
colour alone says nothing about it (exactly chance), while image+text or image+audio determine it fully.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
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
VERSION = 1


def _image(rng: np.random.Generator, shape: int, size: int) -> Image.Image:
    """Dark noisy background with one light-grey shape of random size and position."""
    background = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(background)
    extent = rng.uniform(0.35, 0.7) * size
    x0, y0 = rng.uniform(0, size - extent, 2)
    box = [x0, y0, x0 + extent, y0 + extent]
    tone = int(rng.integers(170, 256))
    draw = ImageDraw.Draw(img)
    if SHAPES[shape] == "circle":
        draw.ellipse(box, fill=(tone,) * 3)
    elif SHAPES[shape] == "square":
        draw.rectangle(box, fill=(tone,) * 3)
    else:
        draw.polygon([(x0 + extent / 2, y0), (x0, y0 + extent), (x0 + extent, y0 + extent)], fill=(tone,) * 3)
    return img


def _tone(rng: np.random.Generator, colour: int, sample_rate: int, seconds: float) -> np.ndarray:
    """A sine whose frequency names the colour, with jittered pitch, amplitude and phase plus white noise."""
    t = np.arange(int(round(sample_rate * seconds))) / sample_rate
    freq = TONES_HZ[colour] * rng.uniform(0.97, 1.03)
    wave = rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    return np.clip(wave + rng.normal(0, 0.02, t.shape), -1, 1).astype(np.float32)


def _split(rng: np.random.Generator, n: int) -> np.ndarray:
    n_val, n_test = int(round(0.15 * n)), int(round(0.15 * n))
    split = np.array(["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test)
    return split[rng.permutation(n)]


def _generate(folder: Path, num_samples: int, seed: int, image_size: int, sample_rate: int, seconds: float) -> None:
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "audio").mkdir()
    shapes = rng.integers(0, 3, num_samples)
    colours = rng.integers(0, 3, num_samples)
    rows = []
    for i, (shape, colour) in enumerate(zip(shapes, colours)):
        name = f"{i:05d}"
        _image(rng, shape, image_size).save(folder / "images" / f"{name}.png")
        sf.write(folder / "audio" / f"{name}.wav", _tone(rng, colour, sample_rate, seconds), sample_rate,
                 subtype="PCM_16")
        text = TEMPLATES[rng.integers(len(TEMPLATES))].format(c=COLOURS[colour])
        rows.append({"image_path": f"images/{name}.png", "text": text, "audio_path": f"audio/{name}.wav",
                     "label": LABELS[(shape + colour) % 3]})
    frame = pd.DataFrame(rows)
    frame["split"] = _split(rng, num_samples)
    frame.to_csv(folder / "demo.csv", index=False)


def ensure_demo(folder: str | Path, *, num_samples: int, seed: int, image_size: int, sample_rate: int,
                seconds: float) -> Path:
    """Generate the demo data set in `folder` unless it is already there with the same parameters; return the CSV.

    Generation happens in a temporary sibling folder that replaces `folder` only when complete, so an interrupted
    run never leaves a half-written data set behind.
    """
    folder = Path(folder)
    params = {"version": VERSION, "num_samples": num_samples, "seed": seed, "image_size": image_size,
              "sample_rate": sample_rate, "seconds": seconds}
    stamp = folder / "demo.json"
    if (folder / "demo.csv").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == params:
        return folder / "demo.csv"
    log.info("generating demo data set: %d samples in %s", num_samples, folder)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _generate(tmp, num_samples, seed, image_size, sample_rate, seconds)
        (tmp / "demo.json").write_text(json.dumps(params, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / "demo.csv"
