"""A Dataset over one split of a Table, the collate function that tokenises a batch's texts at once, and loaders.

A batch is a plain dict: `inputs` (modality -> tensor, or for text a dict of input_ids/attention_mask),
`present` (modality -> bool [B], False where a row has no usable input for it and a zero stands in),
`target` (what the task's `targets` put in the frame, stacked: [B] int64 class indices, [B] float32 numbers,
[B, K] vectors, or a dict of those) and `index` [B] (row in the split's frame, for predictions). The training loop
moves it to the device without knowing which modalities it holds.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from crossmodal_cli.data.cells import Cell
from crossmodal_cli.data.csvfile import where
from crossmodal_cli.data.modalities import load_audio, load_image
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.data.collate import collate_targets
from crossmodal_cli.data.tabular_batch import collate_tabular, frame_arrays, tabular_row, tabular_rows


@dataclass(frozen=True)
class AudioSettings:
    sample_rate: int
    seconds: float


class EpochSampler(Sampler):
    """Yields keys (epoch, row): a permutation seeded by (seed, epoch) when shuffling, else rows in order.

    The order of an epoch depends only on (seed, epoch), so training can resume mid-epoch exactly:
    `set_epoch(epoch, start)` skips the rows already seen without loading them.

    Under torchrun (`world_size` > 1) process `rank` takes positions rank, rank + W, rank + 2W, … of that order, and
    `start` counts positions of the whole order (global samples, a multiple of W): a global batch of B = W x b rows
    is then the same set of rows as batch k of a single process with batch size B, and a checkpoint written with one
    number of processes resumes with another at the same place. Every process must run as many training batches
    (DDP all-reduces in each backward), so a training epoch is evened out: `whole_batches=B` (drop_last) cuts it
    to whole global batches, `pad=True` repeats the order's first rows up to a multiple of W, as
    DistributedSampler does. Evaluation neither cuts nor pads: shards differ by at most one row and no row is
    counted twice in a metric. Alone (world_size 1) it yields exactly the order above.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                 whole_batches: int | None = None, pad: bool = False):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.positions = size  # positions of the whole (evened) order, every process's together
        if world_size > 1 and whole_batches:
            self.positions = size // whole_batches * whole_batches
        elif world_size > 1 and pad:
            self.positions = -(-size // world_size) * world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if start % self.world_size:
            raise ValueError(f"start={start}: a position of the whole order must be a multiple of the "
                             f"{self.world_size} processes")
        self.epoch, self.start = epoch, start

    def order(self) -> torch.Tensor:
        """Row indices of the epoch's whole order, evened out to `positions` [positions]."""
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
        else:
            order = torch.arange(self.size)
        if self.positions > self.size:
            order = torch.cat([order, order[:self.positions - self.size]])
        return order[:self.positions]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, int(i)) for i in self.order()[self.start + self.rank::self.world_size]])

    def __len__(self) -> int:
        return len(range(self.start + self.rank, self.positions, self.world_size))


class TableDataset(Dataset):
    """Rows of one split; dataset[(epoch, row)] = {"image": uint8 [3,S,S], "text": str (or, pre-tokenised, a dict
    of int64 [L] input_ids/attention_mask), "audio": float [N], "tabular": {"numeric": float32 [Cn],
    "numeric_present": bool [Cn], "categorical": int64 [Cc]} (from the frame's columns, `tabular_batch.py`),
    "present": {m: bool}, "target": int | float | array | dict, "index": int}. A missing input (column has_<m>
    False) is zeros / "" (tabular: its cells, all blank).

    Random augmentation and audio crops are seeded by (seed, epoch, row), so they do not depend on worker count
    or on where a resumed run restarted.

    With `images` (data.cache=preprocessed: (array [K, 3, S, S] uint8, each row's position in it or -1),
    `data/preprocessed.py`) images are read from that array instead of being decoded; with `tokens` (each row's
    input_ids and attention_mask [N, L], tokenised once for the whole split) texts are not tokenised per batch.
    When neither decoding nor augmentation is left per row, `__getitems__` (the DataLoader's batch fetch) builds
    the whole batch with one indexed read per array instead of one item at a time.

    An image or audio cell is a path or, for a table read from a DataFrame, encoded bytes or a PIL image (both
    pickle, so workers started by spawn get them too).

    A file that fails to load although it passed the check before training (changed since, or damaged in place
    with its size and time kept, so the validation cache still holds it) stops with one line naming the file,
    its CSV line and the `data.on_missing` choices, never as zeros.
    """

    def __init__(self, frame: pd.DataFrame, modalities: list[str], image_size: int, audio: AudioSettings,
                 train: bool, augment: bool, seed: int, resize: str = "squash",
                 images: tuple[np.ndarray, np.ndarray] | None = None, tokens: dict[str, np.ndarray] | None = None):
        self.columns = {m: frame[m].tolist() for m in modalities if m != "tabular"}
        self.tabular = frame_arrays(frame) if "tabular" in modalities else None
        self.present = {m: (frame[f"has_{m}"].to_numpy(bool) if f"has_{m}" in frame else np.ones(len(frame), bool))
                        for m in modalities}
        self.targets = frame["target"].to_numpy()
        self.origin = ((frame["source"].tolist(), frame["line"].tolist())
                       if {"source", "line"} <= set(frame.columns) else None)
        self.image_size, self.audio, self.train, self.seed, self.resize = image_size, audio, train, seed, resize
        self.augment = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomResizedCrop(
            image_size, scale=(0.8, 1.0), antialias=True)]) if (train and augment) else None
        self.images, self.image_rows = images if images is not None else (None, None)
        self.tokens = tokens
        self.whole_batches = (("image" not in modalities or (self.images is not None and self.augment is None))
                              and ("text" not in modalities or tokens is not None) and "audio" not in modalities)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, i = key
        rng = np.random.default_rng([self.seed, epoch, i]) if self.train else None
        item: dict = {"target": self.targets[i], "index": i,
                      "present": {m: bool(p[i]) for m, p in self.present.items()}}
        if self.tabular is not None:
            item["tabular"] = tabular_row(self.tabular, i)
        for modality, values in self.columns.items():
            if modality == "text" and self.tokens is not None:  # a missing text was tokenised as ""
                item["text"] = {k: torch.from_numpy(v[i].astype(np.int64)) for k, v in self.tokens.items()}
            elif not item["present"][modality]:
                item[modality] = self._blank(modality)
            elif modality == "image":
                image = (torch.from_numpy(np.array(self.images[self.image_rows[i]])) if self.images is not None
                         else self._load(modality, values[i], i, rng))
                item["image"] = self._augment(image, rng) if self.augment is not None else image
            elif modality == "audio":
                item["audio"] = self._load(modality, values[i], i, rng)
            else:
                item["text"] = values[i]
        return item

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[dict] | dict:
        """The batch of `keys`: a finished batch dict (see Collate) when every input comes from an array, else
        the items one by one."""
        if not self.whole_batches:
            return [self[key] for key in keys]
        rows = np.fromiter((i for _, i in keys), dtype=np.int64, count=len(keys))
        inputs: dict = {}
        if "image" in self.columns:
            positions = self.image_rows[rows]
            batch = np.zeros((len(rows), 3, self.image_size, self.image_size), np.uint8)
            has = positions >= 0
            if has.any():
                order = np.argsort(positions[has])  # read the memory-mapped array in file order
                picked = np.flatnonzero(has)[order]
                batch[picked] = self.images[positions[has][order]]
            inputs["image"] = torch.from_numpy(batch)
        if "text" in self.columns:
            inputs["text"] = {k: torch.from_numpy(v[rows].astype(np.int64)) for k, v in self.tokens.items()}
        if self.tabular is not None:
            inputs["tabular"] = tabular_rows(self.tabular, rows)
        return {"inputs": inputs, "present": {m: torch.from_numpy(p[rows]) for m, p in self.present.items()},
                "target": collate_targets(list(self.targets[rows])), "index": torch.from_numpy(rows)}

    def _load(self, modality: str, cell: Cell, i: int, rng: np.random.Generator | None) -> torch.Tensor:
        """Row i's image or audio (a file, or an in-memory cell) decoded; a failure names the CSV line (or the
        DataFrame row) and what to do about it."""
        try:
            if modality == "image":
                return load_image(cell, self.image_size, self.resize)
            return load_audio(cell, self.audio.sample_rate, self.audio.seconds, rng)
        except CrossmodalError as err:
            if self.origin is None:
                raise
            source, line = self.origin[0][i], self.origin[1][i]
            raise CrossmodalError(f"{source}: {where(source, line)}: {err} (fix the file, or set data.on_missing=drop "
                                  f"or zero; a file damaged in place keeps its size and time: set "
                                  f"data.validation_cache=null to check it again)") from None

    def _augment(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**62)))
            return self.augment(image)

    def _blank(self, modality: str):
        if modality == "image":
            return torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8)
        if modality == "audio":
            return torch.zeros(int(round(self.audio.sample_rate * self.audio.seconds)))
        return ""


def tokenize_all(tokenizer, texts: list[str], max_length: int, length: int | None = None) -> dict[str, np.ndarray]:
    """Every text of a split tokenised once, padded to one length for all batches (`length`, or the longest text
    up to max_length): {"input_ids", "attention_mask"} int32 [N, L]. A fixed length also keeps shapes static
    for torch.compile."""
    enc = tokenizer(texts, padding="max_length" if length else "longest", truncation=True,
                    max_length=length or max_length, return_tensors="np", return_token_type_ids=False)
    return {"input_ids": enc["input_ids"].astype(np.int32), "attention_mask": enc["attention_mask"].astype(np.int32)}


class Collate:
    """Stack a list of items into a batch; texts go through the tokenizer once per batch (unless the dataset
    tokenised them ahead); a batch the dataset built whole (`TableDataset.__getitems__`) passes through."""

    def __init__(self, tokenizer=None, max_length: int = 128):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, items: list[dict] | dict) -> dict:
        if isinstance(items, dict):
            return items
        inputs: dict = {}
        for key in ("image", "audio"):
            if key in items[0]:
                inputs[key] = torch.stack([it[key] for it in items])
        if "text" in items[0] and isinstance(items[0]["text"], dict):
            inputs["text"] = {k: torch.stack([it["text"][k] for it in items]) for k in items[0]["text"]}
        elif "text" in items[0]:
            enc = self.tokenizer([it["text"] for it in items], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt", return_token_type_ids=False)
            inputs["text"] = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if "tabular" in items[0]:
            inputs["tabular"] = collate_tabular([it["tabular"] for it in items])
        present = {m: torch.tensor([it["present"][m] for it in items]) for m in items[0]["present"]}
        return {"inputs": inputs, "present": present, "target": collate_targets([it["target"] for it in items]),
                "index": torch.tensor([it["index"] for it in items])}


def resolve_workers(value: int | str) -> int:
    """`auto` = min(8, cores - 1); otherwise a non-negative int."""
    if value == "auto":
        return max(0, min(8, (os.cpu_count() or 1) - 1))
    if isinstance(value, int) and value >= 0:
        return value
    raise CrossmodalError(f"trainer.num_workers={value!r}: use a number >= 0 or auto")


def _ignore_sigint(_worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which finishes its step and saves a checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: TableDataset, collate: Collate, *, batch_size: int, shuffle: bool, num_workers: int,
                seed: int, pin_memory: bool, drop_last: bool = False, rank: int = 0, world_size: int = 1,
                even: bool = False) -> DataLoader:
    """DataLoader over an EpochSampler (loader.sampler.set_epoch(...) before each epoch), with persistent
    workers and prefetching when num_workers > 0.

    `batch_size` is per process; with `world_size` > 1 the loader reads shard `rank` of each epoch and `even`
    (training) gives every process the same number of batches: whole global batches with drop_last, padded
    otherwise (EpochSampler)."""
    sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
                           whole_batches=batch_size * world_size if even and drop_last else None,
                           pad=even and not drop_last)
    # Its own generator, so creating an iterator does not draw from the global torch RNG (exact resume).
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, drop_last=drop_last,
                      generator=generator, multiprocessing_context=_worker_context() if num_workers > 0 else None,
                      num_workers=num_workers, pin_memory=pin_memory, worker_init_fn=_ignore_sigint,
                      persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None)


def _worker_context():
    """'fork' where the platform has it (Linux: torch's usual choice), named explicitly: inside a joblib/loky
    worker (hydra/launcher=joblib) the inherited default is loky's own process type, which DataLoader cannot
    start ('Process' object has no attribute 'env')."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else methods[0])
