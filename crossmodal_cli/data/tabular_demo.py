"""A generated image + text + tabular data set whose label needs the image and a price together.

Each row is a listing: a noisy grey image of a digit 0, 1 or 2 (`matching.draw_digit`), a caption, and four
tabular columns:
    price      heavy-tailed (log-normal around 20, a few in the hundreds), never blank; its bucket (below 13,
               13 to under 31, 31 and up: about a third each) is what the label reads
    weight     roughly normal around 2 kg, blank in about 15% of the rows; unrelated to the label
    brand      acme / globex / initech / umbrella, and the rare "hooli" (about 1% of rows); unrelated
    condition  new / used / refurbished; unrelated
The caption ("listing 17: a tidy item, ships from Oslo") is unrelated too. The label is one of alpha, beta,
gamma = (digit + price bucket) mod 3: the digit alone and the price alone say nothing about it (chance is 1/3,
exactly in expectation, since each is independent of the label), while image + price determine it fully, so
fusion of the two beats each single modality by a wide margin. Labels are balanced (a third each, exactly up to
rounding) and so is every split.

`python -m crossmodal_cli.data.tabular_demo OUT_DIR --rows N --seed S` writes OUT_DIR/data.csv (image_path, text,
price, weight, brand, condition, label, split) and OUT_DIR/images/*.png; the split column (70/15/15 train/val/
test within each label) fixes the splits. Everything comes from two numpy generators seeded from S (the plan's
and the pixels'), so the same arguments give the same files.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from crossmodal_cli.data.demo import LABELS
from crossmodal_cli.data.matching import draw_digit

PRICE_EDGES = (13.0, 31.0)      # price buckets: [0, 13), [13, 31), [31, inf); whole cents, so rounding keeps them
LOG_PRICE = (3.0, 1.0)          # mean and std of log(price): the median price is e^3, about 20
WEIGHT_BLANK = 0.15             # share of rows with a blank weight
BRANDS = ("acme", "globex", "initech", "umbrella", "hooli")
BRAND_SHARES = (0.3, 0.3, 0.2, 0.19, 0.01)  # hooli is the rare value
CONDITIONS = ("new", "used", "refurbished")
ADJECTIVES = ("tidy", "sturdy", "classic", "compact", "handy", "plain")
CITIES = ("Oslo", "Lima", "Accra", "Hanoi", "Perth", "Quito")
SPLIT_SHARES = (("val", 0.15), ("test", 0.15))  # the rest is train
COLUMNS = ["image_path", "text", "price", "weight", "brand", "condition", "label", "split"]


def price_bucket(price: np.ndarray) -> np.ndarray:
    """0, 1 or 2 per price: below 13, 13 to under 31, 31 and up."""
    return np.searchsorted(np.asarray(PRICE_EDGES), price, side="right")


def _prices(rng: np.random.Generator, buckets: np.ndarray) -> np.ndarray:
    """A log-normal price within each row's bucket (inverse CDF of a uniform draw between the bucket edges'
    probabilities), rounded down to whole cents, which keeps it in its bucket."""
    normal, (mu, sigma) = NormalDist(), LOG_PRICE
    edges = [0.0, *(normal.cdf((np.log(e) - mu) / sigma) for e in PRICE_EDGES), 1.0]
    u = rng.uniform(np.take(edges, buckets), np.take(edges, buckets + 1))
    z = np.array([normal.inv_cdf(min(max(p, 1e-12), 1 - 1e-12)) for p in u])
    return np.floor(np.exp(mu + sigma * z) * 100) / 100


def _splits(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """train/val/test per row: round(share x count) rows of each label for val and for test, by a seeded
    permutation, so every split keeps the labels balanced."""
    split = np.full(len(labels), "train", dtype=object)
    for label in np.unique(labels):
        order = rng.permutation(np.flatnonzero(labels == label))
        counts = [int(round(share * len(order))) for _, share in SPLIT_SHARES]
        for (name, _), part in zip(SPLIT_SHARES, np.split(order, np.cumsum(counts))):
            split[part] = name
    return split


def tabular_plan(rows: int, seed: int) -> pd.DataFrame:
    """Every row's content but the pixels: digit (drawn in the image), bucket, label, the tabular cells as
    strings, the caption and the split. `make_tabular_data` writes it (without digit and bucket) with the images
    drawn from the same generator after the plan, so tests can check the rule on the plan alone."""
    if rows < 30:
        raise ValueError(f"rows={rows}: at least 30, so that val and test have rows of every label")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(rows) % 3)
    digits = rng.integers(0, 3, rows)
    buckets = (labels - digits) % 3
    prices = _prices(rng, buckets)
    weights = np.round(np.clip(rng.normal(2.0, 0.5, rows), 0.1, None), 2)
    blank = rng.random(rows) < WEIGHT_BLANK
    brands = rng.choice(len(BRANDS), rows, p=BRAND_SHARES)
    conditions = rng.integers(0, len(CONDITIONS), rows)
    texts = [f"listing {i}: a {ADJECTIVES[a]} item, ships from {CITIES[c]}"
             for i, (a, c) in enumerate(zip(rng.integers(0, len(ADJECTIVES), rows),
                                            rng.integers(0, len(CITIES), rows)))]
    return pd.DataFrame({"digit": digits, "bucket": buckets, "text": texts,
                         "price": [f"{p:.2f}" for p in prices],
                         "weight": ["" if b else f"{w:.2f}" for w, b in zip(weights, blank)],
                         "brand": [BRANDS[b] for b in brands], "condition": [CONDITIONS[c] for c in conditions],
                         "label": [LABELS[k] for k in labels], "split": _splits(rng, labels)})


def make_tabular_data(folder: str | Path, rows: int, *, seed: int = 0, image_size: int = 32) -> Path:
    """Write folder/data.csv (COLUMNS) and folder/images/NNNNN.png; return the CSV path. The same arguments give
    the same files."""
    if image_size < 16:
        raise ValueError(f"image_size={image_size}: use 16 or more, so each dot of a digit spans a pixel")
    plan = tabular_plan(rows, seed)
    images = np.random.default_rng([seed, 1])  # the pixels: a stream of their own, after the plan's
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    paths = [f"images/{i:05d}.png" for i in range(rows)]
    for path, digit in zip(paths, plan["digit"].tolist()):
        draw_digit(images, int(digit), image_size).save(folder / path)
    frame = plan.assign(image_path=paths)[COLUMNS]
    csv = folder / "data.csv"
    frame.to_csv(csv, index=False)
    return csv


OPTIONS = (("--rows", 2000, "number of rows"), ("--seed", 0, "seed of the generator"),
           ("--image-size", 32, "pixels per image side"))


def main(argv: list[str] | None = None) -> None:
    """`python -m crossmodal_cli.data.tabular_demo OUT_DIR [--rows N] [--seed S] [--image-size P]`: prints the
    CSV's path."""
    parser = argparse.ArgumentParser(prog="python -m crossmodal_cli.data.tabular_demo",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="where data.csv and images/ go")
    for flag, default, text in OPTIONS:
        parser.add_argument(flag, type=int, default=default, help=f"{text} (default {default})")
    args = parser.parse_args(argv)
    try:
        csv = make_tabular_data(args.folder, args.rows, seed=args.seed, image_size=args.image_size)
    except ValueError as err:
        parser.error(str(err))
    print(csv)


if __name__ == "__main__":
    main()
