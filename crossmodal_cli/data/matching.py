"""A generated image-text matching data set: does the digit drawn in the image equal the digit the caption names?

Each row has a noisy grey image with one digit 0-9 (drawn from a 5x7 dot-matrix glyph with random cell size,
position and brightness, so no font file is needed and every machine draws the same pixels) and a caption naming
a digit in words in one of several wordings ("a picture of the number seven"). Half the rows are `match` (the
caption names the drawn digit), half `mismatch` (it names one of the nine other digits, uniformly). The image's
digit alone and the caption's digit alone say nothing about the label (P(match | either) = 1/2 exactly in
expectation), and neither does any sum of a function of the image and a function of the caption, so image alone,
text alone and late (decision-level) fusion stay at chance 0.5; the label is the equality of the two, an
interaction of the modalities, which is what the interaction fusions (product, bilinear, attention,
cross_attention, gated) exist for (docs/fusion.md, "Measured on a matching task").

`python -m crossmodal_cli.data.matching OUT_DIR --rows N --seed S` writes OUT_DIR/data.csv (image_path, text,
label, split) and OUT_DIR/images/*.png; the split column (70/15/15 train/val/test, within each label so every
split is balanced) makes `cmtrain experiment=matching data.csv=OUT_DIR/data.csv` use exactly these splits.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LABELS = ("mismatch", "match")
TEMPLATES = ("a picture of the number {d}", "the digit {d}", "this shows a {d}", "it is a {d}, i think",
             "number {d} is written here", "look, a {d}", "an image of {d}", "probably a {d}")
GLYPHS = (  # 5 columns x 7 rows per digit, "#" = ink
    (" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "),
    ("  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    (" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"),
    ("#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "),
    ("   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "),
    ("#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "),
    ("  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "),
    ("#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "),
    (" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "),
    (" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "),
)
SPLIT_SHARES = {"val": 0.15, "test": 0.15}  # the rest is train


def draw_digit(rng: np.random.Generator, digit: int, size: int) -> Image.Image:
    """A size x size RGB image: dark noise with the digit's glyph in light grey, each glyph cell a square of a
    random side (size/11 .. size/10 pixels), the glyph within size/8 of the centre, at a random brightness."""
    pixels = rng.integers(0, 50, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    cell = rng.uniform(size / 11, size / 10)
    shift = size / 8  # the glyph's centre moves at most this far from the image's centre
    x0 = (size - 5 * cell) / 2 + rng.uniform(-shift, shift)
    y0 = (size - 7 * cell) / 2 + rng.uniform(-shift, shift)
    ink = (int(rng.integers(160, 256)),) * 3
    draw = ImageDraw.Draw(img)
    for row, line in enumerate(GLYPHS[digit]):
        for col, mark in enumerate(line):
            if mark == "#":
                left, top = x0 + col * cell, y0 + row * cell
                draw.rectangle((left, top, left + cell - 1, top + cell - 1), fill=ink)
    return img


def caption(rng: np.random.Generator, digit: int) -> str:
    """A short caption naming `digit` in words, in one of several wordings."""
    return TEMPLATES[rng.integers(len(TEMPLATES))].format(d=WORDS[digit])


def _pairs(rng: np.random.Generator, rows: int, digits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image digits, caption digits, match 0/1) [rows], digits 0 .. digits-1: exactly rows // 2 matches (one more
    mismatch when odd) in a random order; a mismatch's caption digit is one of the others, uniformly."""
    match = rng.permutation(np.arange(rows) < rows // 2).astype(int)
    shown = rng.integers(0, digits, rows)
    named = np.where(match == 1, shown, (shown + rng.integers(1, digits, rows)) % digits)
    return shown, named, match


def _splits(rng: np.random.Generator, match: np.ndarray) -> np.ndarray:
    """train/val/test per row: within each label, round(share x count) rows each for val and test by a seeded
    permutation, so every split has (nearly) as many matches as mismatches."""
    split = np.full(len(match), "train", dtype=object)
    for value in (0, 1):
        rows = rng.permutation(np.flatnonzero(match == value))
        start = 0
        for name, share in SPLIT_SHARES.items():
            count = int(round(share * len(rows)))
            split[rows[start:start + count]] = name
            start += count
    return split


def make_matching_data(folder: str | Path, rows: int, *, seed: int = 0, image_size: int = 32,
                       digits: int = 10) -> Path:
    """Write folder/data.csv (image_path, text, label, split) and folder/images/NNNNN.png; return the CSV path.
    The digits are 0 .. digits-1 (fewer digits: an easier task, for quick tests). Everything comes from one numpy
    generator seeded with `seed`, so the same arguments give the same files."""
    if not 2 <= digits <= 10:
        raise ValueError(f"digits={digits}: between 2 and 10")
    if rows < 20:
        raise ValueError(f"rows={rows}: at least 20, so that val and test have rows of both labels")
    if image_size < 16:
        raise ValueError(f"image_size={image_size}: at least 16 pixels, so that a glyph cell is a pixel or more")
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    shown, named, match = _pairs(rng, rows, digits)
    records = []
    for i in range(rows):
        name = f"images/{i:05d}.png"
        draw_digit(rng, int(shown[i]), image_size).save(folder / name)
        records.append({"image_path": name, "text": caption(rng, int(named[i])), "label": LABELS[match[i]]})
    frame = pd.DataFrame(records, columns=["image_path", "text", "label"])
    frame["split"] = _splits(rng, match)
    path = folder / "data.csv"
    frame.to_csv(path, index=False)
    return path


def main(argv: list[str] | None = None) -> None:
    """`python -m crossmodal_cli.data.matching OUT_DIR --rows N --seed S [--image-size P]`."""
    parser = argparse.ArgumentParser(prog="python -m crossmodal_cli.data.matching", description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="output folder (data.csv and images/ are written there)")
    parser.add_argument("--rows", type=int, default=2000, help="number of rows (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generator (default 0)")
    parser.add_argument("--image-size", type=int, default=32, help="pixels per image side (default 32)")
    parser.add_argument("--digits", type=int, default=10, help="use the digits 0 .. DIGITS-1 (default 10)")
    args = parser.parse_args(argv)
    try:
        path = make_matching_data(args.folder, args.rows, seed=args.seed, image_size=args.image_size,
                                  digits=args.digits)
    except ValueError as err:
        parser.error(str(err))
    print(path)


if __name__ == "__main__":
    main()
