"""A generated text (+ image) data set whose test texts say the same things in other words than the training texts.

Four topics (weather, food, sport, music); every training sentence uses words that no test sentence uses, so a
text encoder trained from scratch on the training texts cannot read the test texts, while a pretrained language
model can. Used by the tests of pretrained encoders and by `scripts/benchmark_cache.py`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SENTENCES = {
    "weather": (["it will rain all afternoon", "a storm is coming from the west", "the sky is grey and cloudy",
                 "expect snow on the mountains", "strong winds blew all night",
                 "the temperature will drop below zero"],
                ["showers are forecast for later", "thunder and lightning tonight",
                 "overcast conditions through the weekend", "a blizzard hit the hills", "gusts knocked over the fence",
                 "it is freezing outside"]),
    "food": (["the pasta with tomato sauce was delicious", "we baked fresh bread this morning",
              "she ordered a pizza with cheese", "the soup needs more salt", "grilled chicken with rice for dinner",
              "a chocolate cake for dessert"],
             ["the spaghetti tasted wonderful", "homemade loaves came out of the oven",
              "he got a takeaway margherita", "this broth is rather bland",
              "roasted poultry served with a side of grains", "a sweet cocoa gateau after the meal"]),
    "sport": (["the team scored a goal in the last minute", "he runs a marathon every year",
               "the tennis match lasted three hours", "she won the swimming race", "the football season starts next week",
               "our basketball coach is strict"],
              ["a late strike won the game for the club", "she completed a long distance race",
               "the final set went on and on", "first place in the pool competition", "the league kicks off soon",
               "the trainer of our hoops squad is demanding"]),
    "music": (["the band played a loud concert", "she sings in the choir", "he is learning to play the guitar",
               "the orchestra performed a symphony", "a new album was released today",
               "the drummer kept a steady beat"],
              ["the group performed a noisy gig", "her voice fills the chorus", "he practises strumming chords",
               "the philharmonic gave a classical performance", "their latest record just came out",
               "the percussionist held the rhythm"]),
}
OPENINGS = ["", "I heard that ", "apparently ", "they told me ", "so ", "well, "]
ENDINGS = ["", " yesterday", " again", " for sure", " as usual", " once more"]


def make_paraphrase_data(folder: str | Path, rows: int, *, seed: int = 0, image_size: int = 0,
                         val_share: float = 0.2, test_share: float = 0.2) -> Path:
    """Write folder/data.csv (text, label, split; with image_size > 0 also image_path to a PNG of random colour
    noise, which carries no label information) and return its path. Train rows use the first sentence list of each
    topic; val and test rows the second (the paraphrases)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if image_size:
        (folder / "img").mkdir(exist_ok=True)
    topics = sorted(SENTENCES)
    records = []
    for i in range(rows):
        topic = topics[i % len(topics)]
        draw = rng.random()
        split = "val" if draw < val_share else "test" if draw < val_share + test_share else "train"
        sentences = SENTENCES[topic][0 if split == "train" else 1]
        text = (OPENINGS[rng.integers(len(OPENINGS))] + sentences[rng.integers(len(sentences))]
                + ENDINGS[rng.integers(len(ENDINGS))])
        record = {"text": text, "label": topic, "split": split}
        if image_size:
            name = f"img/{i:05d}.png"
            pixels = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name)
            record["image_path"] = name
        records.append(record)
    path = folder / "data.csv"
    pd.DataFrame(records).to_csv(path, index=False)
    return path
