"""Rows -> the model's input arrays, as the training pipeline prepares them, without torch.

Images: decoding.image_pixels (upright, fitted to the bundle's size and resize mode), uint8 [B, 3, H, W]; the model
normalises them. Text: the bundle's tokenizer.json (truncated and padded to max_length, the graph's static token axis),
input_ids/attention_mask int64 [B, max_length]. Audio: every frame (decoding.read_audio), mixed to mono, resampled to the
encoder's rate (resample.py), cropped from the start or zero-padded to its length: float32 [B, N]. Tabular columns:
the bundle's fitted preprocessing (data/tabular.py, torch-free), float32/bool/int64 [B, C]. A cell that is
blank, or a file that cannot be read, is *missing*: with on_missing=zero its modality is masked for that row (the
model sees `has_MODALITY` False and a blank input, as in training); drop leaves the row out; error stops.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from tokenizers import Tokenizer

from crossmodal_cli.data.decoding import AUDIO_ERRORS, image_pixels, read_audio
from crossmodal_cli.data.tabular import TabularPreprocessor
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.runtime.resample import resample


def blank(value: Any) -> bool:
    """A cell that holds nothing: None, NaN, or text that is only spaces."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and not value.strip()


def load_tokenizer(path: str, spec: dict) -> Tokenizer:
    tokenizer = Tokenizer.from_file(path)
    tokenizer.enable_truncation(int(spec["max_length"]))
    tokenizer.enable_padding(pad_id=int(spec["pad_id"]), pad_token=spec["pad_token"], length=int(spec["max_length"]))
    return tokenizer


class Inputs:
    """Prepares one modality's cells; `__call__` returns (array for the batch, usable [B] bool, reasons)."""

    def __init__(self, spec: dict, tokenizer: Tokenizer | None):
        self.spec, self.tokenizer = spec, tokenizer
        self.preprocessor = TabularPreprocessor.from_state(spec["tabular"]["state"]) if "tabular" in spec else None

    def tabular(self, frame: pd.DataFrame, source: str) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
        """The tabular columns of `frame` (indexed by line) transformed as in training: {tabular_KIND: array}
        for the graph's inputs (bundle.json "tabular"."inputs"); a row is usable when one cell is not blank. A
        category the training split lacked is unknown; a word in a numeric column is an error naming its line."""
        arrays = self.preprocessor.transform(frame, source)
        values = {f"tabular_{kind}": value for kind, value in arrays.inputs().items()
                  if kind in self.spec["tabular"]["inputs"]}
        ok = arrays.any_present()
        return values, ok, ["" if good else "every tabular cell blank" for good in ok]

    def image(self, cells: list) -> tuple[np.ndarray, np.ndarray, list[str]]:
        size, resize = int(self.spec["image"]["size"]), self.spec["image"]["resize"]
        out = np.zeros((len(cells), 3, size, size), np.uint8)
        ok, why = np.ones(len(cells), bool), [""] * len(cells)
        for i, cell in enumerate(cells):
            if blank(cell):
                ok[i], why[i] = False, "no image"
                continue
            try:
                out[i] = image_pixels(cell, size, resize)
            except CrossmodalError as err:
                ok[i], why[i] = False, str(err)
        return out, ok, why

    def audio(self, cells: list) -> tuple[np.ndarray, np.ndarray, list[str]]:
        rate, seconds = int(self.spec["audio"]["sample_rate"]), float(self.spec["audio"]["seconds"])
        length = int(round(rate * seconds))
        out = np.zeros((len(cells), length), np.float32)
        ok, why = np.ones(len(cells), bool), [""] * len(cells)
        for i, cell in enumerate(cells):
            if blank(cell):
                ok[i], why[i] = False, "no audio"
                continue
            try:
                data, found = read_audio(cell)
            except AUDIO_ERRORS as err:
                ok[i], why[i] = False, f"cannot read audio ({err})"
                continue
            wave = resample(data.mean(axis=1).astype(np.float32), found, rate)[:length]
            out[i, :len(wave)] = wave
        return out, ok, why

    def text(self, cells: list) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
        ok = np.array([not blank(c) for c in cells], bool)
        texts = [str(c) if good else "" for c, good in zip(cells, ok)]
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], np.int64)
        mask = np.array([e.attention_mask for e in encoded], np.int64)
        return {"input_ids": ids, "attention_mask": mask}, ok, ["" if good else "no text" for good in ok]
