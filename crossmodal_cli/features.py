"""The frozen-feature cache: each frozen encoder's outputs computed once, stored on disk, shared by runs.

With every encoder frozen (`encoder.<m>.freeze=true`) and `trainer.feature_cache=true`, `model.encode()` runs once
per distinct input, not once per epoch and job: the outputs (`Encoded`: pooled [N, D], tokens [N, T, D] and mask
[N, T]) go to `trainer.cache_dir/<modality>/<key>/` and training reads them back through `FeatureDataset`, the
same loop and `model.fuse()`.

The key of a modality's entry hashes everything its features depend on: the encoder's config, a digest of its
weights, the input settings (image size and resize mode, tokenizer and max length, sample rate and seconds) and
the identity of every input (path, size and modification time of each file; the text itself). A changed file,
weight or setting gives another key, so a stale entry is never read. Entries are written to a temporary folder and
renamed into place, under a file lock, so the jobs of a sweep that need the same features compute them once and
never read half-written files.

Hand-written because no library caches per-encoder features keyed this way; the arrays are plain `.npy` files
opened memory-mapped, so a 30-job sweep shares one copy through the page cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from crossmodal_cli.encoders import Encoded
from crossmodal_cli.encoders.adapters import has_adapters
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.data.cachefiles import entry_key, input_identity, locked
from crossmodal_cli.data.collate import collate_targets

log = logging.getLogger(__name__)


def weights_digest(module: nn.Module) -> str:
    """A digest of a module's parameters and buffers (names, shapes, values)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureEntry:
    """One modality's cached features: `rows` maps an input identity to its row in the arrays."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.rows: dict[str, int] = json.loads((folder / "index.json").read_text())
        self.pooled = np.load(folder / "pooled.npy", mmap_mode="r")   # [N, D] float16
        self.tokens = np.load(folder / "tokens.npy", mmap_mode="r")   # [N, T, D] float16
        self.mask = np.load(folder / "mask.npy", mmap_mode="r")       # [N, T] bool

    def positions(self, identities: Iterable[str]) -> np.ndarray:
        return np.asarray([self.rows[i] for i in identities], dtype=np.int64)


def load_or_compute(root: Path, modality: str, key: str, identities: list[str],
                    compute: Callable[[], tuple[list[str], Encoded]]) -> FeatureEntry:
    """The entry under root/modality/key; computed with `compute()` -> (identities, Encoded over them) when
    absent. Concurrent callers with the same key wait for the first and read its result."""
    folder = root / modality / key
    with locked(root / modality / f".{key}.lock"):
        if not (folder / "index.json").is_file():
            order, encoded = compute()
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
            try:
                np.save(tmp / "pooled.npy", encoded.pooled.float().numpy().astype(np.float16))
                np.save(tmp / "tokens.npy", encoded.tokens.float().numpy().astype(np.float16))
                mask = encoded.mask if encoded.mask is not None else torch.ones(encoded.tokens.shape[:2], dtype=bool)
                np.save(tmp / "mask.npy", mask.bool().numpy())
                (tmp / "index.json").write_text(json.dumps({ident: i for i, ident in enumerate(order)}))
                os.replace(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            log.info("feature cache: stored %d %s inputs in %s", len(order), modality, folder)
        else:
            log.info("feature cache: reusing %s features from %s", modality, folder)
    entry = FeatureEntry(folder)
    missing = [i for i in identities if i not in entry.rows]
    if missing:  # cannot happen for a key over these identities; guards against a hand-edited cache
        raise RuntimeError(f"feature cache {folder} lacks {len(missing)} inputs; delete the folder")
    return entry


class FeatureDataset(Dataset):
    """Rows of one split read from cached features: dataset[(epoch, row)] = {"inputs": {m: {"pooled", "tokens",
    "mask"}}, "present", "target", "index"} (float32 tensors; what `MultimodalModel.fuse` reads)."""

    def __init__(self, frame: pd.DataFrame, modalities: list[str], entries: Mapping[str, FeatureEntry]):
        self.entries = dict(entries)
        self.positions = {m: entries[m].positions(row_identities(frame, m)) for m in modalities}
        self.present = {m: (frame[f"has_{m}"].to_numpy(bool) if f"has_{m}" in frame else np.ones(len(frame), bool))
                        for m in modalities}
        self.targets = frame["target"].to_numpy()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[dict]:
        """A whole batch from the memory-mapped arrays at once (one fancy index per array)."""
        rows = np.asarray([i for _, i in keys], dtype=np.int64)
        columns = {}
        for m, entry in self.entries.items():
            at = self.positions[m][rows]
            columns[m] = (torch.from_numpy(np.asarray(entry.pooled[at], dtype=np.float32)),
                          torch.from_numpy(np.asarray(entry.tokens[at], dtype=np.float32)),
                          torch.from_numpy(np.asarray(entry.mask[at])))
        items = []
        for n, i in enumerate(rows.tolist()):
            inputs = {m: {"pooled": p[n], "tokens": t[n], "mask": k[n]} for m, (p, t, k) in columns.items()}
            items.append({"inputs": inputs, "present": {m: bool(self.present[m][i]) for m in self.present},
                          "target": self.targets[i], "index": i})
        return items


def collate_features(items: list[dict]) -> dict:
    """Stack items of a FeatureDataset into the batch layout of `Collate`."""
    modalities = list(items[0]["inputs"])
    inputs = {m: {k: torch.stack([it["inputs"][m][k] for it in items]) for k in ("pooled", "tokens", "mask")}
              for m in modalities}
    present = {m: torch.tensor([it["present"][m] for it in items]) for m in items[0]["present"]}
    return {"inputs": inputs, "present": present, "target": collate_targets([it["target"] for it in items]),
            "index": torch.tensor([it["index"] for it in items])}


ABSENT_INPUT = "<absent>"


def row_identities(frame: pd.DataFrame, modality: str) -> list[str]:
    """Each row's input identity for `modality`; a row without that input (has_<m> False) shares one identity."""
    present = frame[f"has_{modality}"].to_numpy(bool) if f"has_{modality}" in frame else np.ones(len(frame), bool)
    return [input_identity(modality, v) if p else f"{modality}:{ABSENT_INPUT}"
            for v, p in zip(frame[modality].tolist(), present)]


def _stack(parts: list[Encoded]) -> Encoded:
    """Concatenate batches of Encoded along B, padding tokens/mask to the longest T (texts vary per batch)."""
    length = max(p.tokens.shape[1] for p in parts)
    tokens, masks = [], []
    for p in parts:
        pad = length - p.tokens.shape[1]
        mask = p.mask if p.mask is not None else torch.ones(p.tokens.shape[:2], dtype=torch.bool)
        tokens.append(torch.nn.functional.pad(p.tokens, (0, 0, 0, pad)))
        masks.append(torch.nn.functional.pad(mask.bool(), (0, pad), value=False))
    return Encoded(pooled=torch.cat([p.pooled for p in parts]), tokens=torch.cat(tokens), mask=torch.cat(masks))


def refuse_adapters(modality: str, rank: int | None) -> None:
    """An encoder with adapters trains (its outputs change every step): its features cannot be cached."""
    raise CrossmodalError(f"trainer.feature_cache=true: encoder.{modality}.lora.r={rank or '(> 0)'} adds adapters that train, so "
                          f"its features cannot be cached; set encoder.{modality}.lora.r=0 (and freeze=true) or "
                          f"trainer.feature_cache=false")


@torch.no_grad()
def encode_all(encoder: nn.Module, loader, modality: str, device: torch.device, autocast) -> Encoded:
    """Run a frozen encoder over a loader of one modality: Encoded on the CPU, in the loader's order. An encoder
    with adapters is refused (`refuse_adapters`)."""
    if has_adapters(encoder):
        refuse_adapters(modality, None)
    encoder.eval()
    parts = []
    for batch in loader:
        inputs = batch["inputs"][modality]
        inputs = {k: v.to(device) for k, v in inputs.items()} if isinstance(inputs, dict) else inputs.to(device)
        with autocast():
            out = encoder(inputs)
        parts.append(Encoded(pooled=out.pooled.float().cpu(), tokens=out.tokens.float().cpu(),
                             mask=out.mask.cpu() if out.mask is not None else None))
    return _stack(parts)


def feature_entries(frames: list[pd.DataFrame], modalities: list[str], root: Path,
                    describe: Callable[[str], dict], encode: Callable[[str, pd.DataFrame], Encoded]
                    ) -> dict[str, FeatureEntry]:
    """{modality: FeatureEntry} covering every row of `frames`; `describe(m)` is what the features depend on
    besides the inputs, `encode(m, frame of distinct inputs)` computes them. The distinct rows keep the
    modality's prepared columns ("M.*": the tabular inputs, data/tabular_batch.py)."""
    entries = {}
    for m in modalities:
        prepared = [c for c in frames[0].columns if str(c).startswith(f"{m}.")]  # e.g. tabular.numeric/C
        columns = [m, *([f"has_{m}"] if any(f"has_{m}" in f for f in frames) else []), *prepared]
        rows = pd.concat([f[columns] for f in frames if len(f)], ignore_index=True)
        if f"has_{m}" in rows:
            rows[f"has_{m}"] = rows[f"has_{m}"].fillna(True).astype(bool)
        identities = row_identities(rows, m)
        distinct = rows.assign(identity=identities).drop_duplicates("identity").reset_index(drop=True)

        def compute(m=m, distinct=distinct) -> tuple[list[str], Encoded]:
            log.info("feature cache: encoding %d distinct %s inputs", len(distinct), m)
            return distinct["identity"].tolist(), encode(m, distinct)

        entries[m] = load_or_compute(root, m, entry_key(describe(m), identities), identities, compute)
    return entries
