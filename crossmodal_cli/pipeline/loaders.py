"""The DataLoaders of a run: one per split, preparing inputs as the encoders declare, sharded under torchrun;
with trainer.feature_cache the frozen encoders' outputs are computed once and cached (features.py) instead."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from crossmodal_cli.data.dataset import AudioSettings, Collate, TableDataset, make_loader, tokenize_all
from crossmodal_cli.data.modalities import tokenizer_to_json
from crossmodal_cli.data.preprocessed import cached_images
from crossmodal_cli.data.table import SPLITS, Table
from crossmodal_cli.encoders import Encoded
from crossmodal_cli.engine import distributed
from crossmodal_cli.engine.runtime import autocast
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.factory import encoder_node
from crossmodal_cli.features import FeatureDataset, collate_features, encode_all, feature_entries, weights_digest
from crossmodal_cli.model import MultimodalModel
from crossmodal_cli.pipeline.inputs import audio_rate, image_input
from crossmodal_cli.settings.run import RunSettings

log = logging.getLogger(__name__)


def make_split_loader(table: Table, split: str, cfg: RunSettings, tokenizer, *, batch_size: int, train: bool,
                      num_workers: int, seed: int, pin_memory: bool, drop_last: bool = False, augment: bool = True,
                      shard: bool = False):
    """A DataLoader over one split, preparing inputs as the encoders declare (image size and resize mode).
    `shard` (cmtrain under torchrun): this process's shard of each epoch, `batch_size` rows per process."""
    data = cfg.data
    size, resize = image_input(cfg) if "image" in table.modalities else (0, "squash")
    frame, images, tokens = table.splits[split], None, None
    if data.cache == "preprocessed":
        if "image" in table.modalities:
            present = frame["has_image"].to_numpy(bool) if "has_image" in frame else np.ones(len(frame), bool)
            images = cached_images(frame["image"].tolist(), present, size, resize, data.cache_dir)
        if "text" in table.modalities:
            present = frame["has_text"].to_numpy(bool) if "has_text" in frame else np.ones(len(frame), bool)
            texts = [t if has else "" for t, has in zip(frame["text"].tolist(), present)]
            tokens = tokenize_all(tokenizer, texts, data.text.max_length)
    dataset = TableDataset(frame, table.modalities, size, AudioSettings(audio_rate(cfg), data.audio.seconds),
                           train=train, augment=data.augment and augment, seed=seed, resize=resize, images=images,
                           tokens=tokens)
    return make_loader(dataset, Collate(tokenizer, data.text.max_length), batch_size=batch_size, shuffle=train,
                       num_workers=num_workers, seed=seed, pin_memory=pin_memory, drop_last=drop_last,
                       **_shard(shard, train))


def _shard(shard: bool, train: bool) -> dict:
    """make_loader's sharding arguments: this process's rank and the world size; training evened out."""
    if not shard:
        return {}
    return {"rank": distributed.rank(), "world_size": distributed.world_size(), "even": train}


def make_loaders(cfg: RunSettings, table: Table, model: MultimodalModel, tokenizer, *, device: torch.device,
                 precision: str, num_workers: int) -> dict[str, Any]:
    """{split: DataLoader} for train, val and test (None when empty): raw inputs, or with trainer.feature_cache the
    frozen encoders' cached outputs (features.py) and `model.from_features` set.

    trainer.batch_size is the global batch: under torchrun each process loads its shard of every split,
    batch_size / world_size rows at a time (engine/distributed.py); the feature cache is computed by rank 0."""
    batch_size, seed = cfg.trainer.batch_size, cfg.seed
    drop_last = cfg.trainer.drop_last and len(table.splits["train"]) >= batch_size
    local = distributed.local_batch(batch_size)
    if not cfg.trainer.feature_cache:
        common = dict(cfg=cfg, tokenizer=tokenizer, batch_size=local, num_workers=num_workers, seed=seed,
                      pin_memory=device.type == "cuda", shard=True)
        with distributed.rank_zero_first():  # a data cache (data.cache) is filled by rank 0, then read by the others
            return {split: (make_split_loader(table, split, train=split == "train",
                                              drop_last=drop_last and split == "train", **common)
                            if len(table.splits[split]) else None) for split in SPLITS}
    if cfg.data.augment:
        log.info("feature cache: data.augment is off (cached features are computed once, without augmentation)")
    size, resize = image_input(cfg) if "image" in table.modalities else (0, "squash")
    audio = AudioSettings(audio_rate(cfg), cfg.data.audio.seconds)
    settings = {"image": {"size": size, "resize": resize},
                "text": {"max_length": cfg.data.text.max_length,
                         "tokenizer": tokenizer_to_json(tokenizer) if tokenizer is not None else None},
                "audio": {"sample_rate": audio.sample_rate, "seconds": audio.seconds},
                "tabular": {"preprocessing": table.tabular.state() if table.tabular is not None else None}}

    def describe(m: str) -> dict:
        return {"modality": m, "encoder": encoder_node(cfg, m)[0], "weights": weights_digest(model.encoders[m]),
                "inputs": settings[m], "precision": precision}

    def encode(m: str, distinct) -> Encoded:
        dataset = TableDataset(distinct.assign(target=0), [m], size, audio, train=False, augment=False, seed=seed,
                               resize=resize)
        loader = make_loader(dataset, Collate(tokenizer, cfg.data.text.max_length), batch_size=batch_size,
                             shuffle=False, num_workers=num_workers, seed=seed, pin_memory=device.type == "cuda")
        return encode_all(model.encoders[m], loader, m, device, lambda: autocast(device, precision))

    frames = [table.splits[s] for s in SPLITS]
    with distributed.rank_zero_first():
        entries = feature_entries(frames, table.modalities, Path(cfg.trainer.cache_dir).expanduser(), describe,
                                  encode)
    model.from_features = True
    return {split: (make_loader(FeatureDataset(table.splits[split], table.modalities, entries), collate_features,
                                batch_size=local, shuffle=split == "train", num_workers=0, seed=seed,
                                pin_memory=device.type == "cuda", drop_last=drop_last and split == "train",
                                **_shard(True, split == "train"))
                    if len(table.splits[split]) else None) for split in SPLITS}


def check_feature_cache(settings: RunSettings, modalities: Sequence[str]) -> None:
    """trainer.feature_cache=true needs every encoder in use frozen for the whole run."""
    if not settings.trainer.feature_cache:
        return
    for m in modalities:
        encoder = settings.encoder[m]
        if not encoder.get("freeze") or encoder.get("unfreeze_at_epoch") is not None:
            raise CrossmodalError(f"trainer.feature_cache=true: encoder.{m} must stay frozen for the whole run "
                                  f"(set encoder.{m}.freeze=true and encoder.{m}.unfreeze_at_epoch=null), or leave "
                                  f"{m} out with modalities=[...]")
