"""A small image + text data set whose rows carry every kind of target: the README's task examples and the tests.

Row i shows one of six hues at one of four brightness levels: the image is filled with that colour (32 px), the
text names both words plus a filler word ("crimson dim quietly"). Labels derived from (hue, level):
`hue` (6 classes), `value` (= 2 x level + hue / 2, a number), `tags` (warm / dark / red, joined by |; some rows
have none). Both modalities carry everything, so every task is learnable from either.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

HUES = ["crimson", "amber", "gold", "olive", "teal", "violet"]
PALETTE = [(220, 20, 60), (255, 160, 0), (230, 200, 20), (110, 140, 20), (0, 150, 150), (140, 60, 200)]
LEVELS = ["dim", "soft", "bright", "vivid"]
FILLERS = ["quietly", "here", "again", "today", "now", "there", "indeed", "maybe"]


def tags(hue: int, level: int) -> str:
    labels = (["warm"] if hue < 3 else []) + (["dark"] if level < 2 else []) + (["red"] if hue == 0 else [])
    return "|".join(labels)


def write_colours(folder: Path | str, n: int = 240, seed: int = 0) -> Path:
    """FOLDER/data.csv with columns image_path, text, hue, label (= hue), value, tags, and FOLDER/img/; returns
    the CSV's path.

        python -c "from crossmodal_cli.data.colours import write_colours; write_colours('data/colours')"
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        hue, level = int(rng.integers(6)), int(rng.integers(4))
        colour = np.array(PALETTE[hue]) * (0.35 + 0.2 * level)
        pixels = np.clip(colour + rng.normal(0, 6, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "img" / f"{i}.png")
        rows.append({"image_path": f"img/{i}.png", "text": f"{HUES[hue]} {LEVELS[level]} {rng.choice(FILLERS)}",
                     "hue": HUES[hue], "label": HUES[hue], "value": 2 * level + hue / 2, "tags": tags(hue, level)})
    path = folder / "data.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
