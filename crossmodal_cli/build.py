"""From a resolved config to the objects a run needs: device, table, tokenizer, loaders, model, optimizer.

Shared by cmtrain and cmeval, so a checkpoint's stored config rebuilds exactly the model that was trained.
Values known only at run time (feature widths, class count, vocabulary size) are passed to `instantiate` here;
no Hydra config object reaches a model, encoder, fusion or dataset.
"""
from __future__ import annotations

import inspect
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from crossmodal_cli.data.dataset import AudioSettings, Collate, TableDataset, make_loader, tokenize_all
from crossmodal_cli.data.demo import ensure_demo
from crossmodal_cli.data.modalities import load_pretrained_tokenizer, tokenizer_to_json, train_wordpiece
from crossmodal_cli.data.preprocessed import cached_images
from crossmodal_cli.data.table import SPLITS, Table, load_table
from crossmodal_cli.data.validation import check_inputs
from crossmodal_cli.encoders import Encoded
from crossmodal_cli.engine import distributed
from crossmodal_cli.engine.loop import autocast
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.features import FeatureDataset, collate_features, encode_all, feature_entries, weights_digest
from crossmodal_cli.model import MultimodalModel, Transfer
from crossmodal_cli.paths import config_dir
from crossmodal_cli.tasks.base import Task

log = logging.getLogger(__name__)
PATH_KEYS = ("csv", "train_csv", "val_csv", "test_csv", "root")


def seed_everything(seed: int) -> None:
    """The one place seeds are set: Python, NumPy, torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CrossmodalError(f"trainer.device={name}: no CUDA GPU is visible; use trainer.device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise CrossmodalError(f"trainer.device={name}: use auto, cpu, cuda or cuda:N") from None


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in ("bf16", "fp16", "fp32"):
        raise CrossmodalError(f"trainer.precision={name}: use auto, bf16, fp16 or fp32")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise CrossmodalError("trainer.precision=bf16: this GPU has no bf16 support; use trainer.precision=fp16")
    return name


def absolute_data_paths(data: DictConfig) -> None:
    """Make the data config's paths absolute (relative to the working directory), in place, so a checkpoint's
    stored config finds its data from any folder."""
    for key in PATH_KEYS:
        if data.get(key):
            data[key] = str(Path(data[key]).expanduser().resolve())
    if data.get("demo"):
        data.demo.folder = str(Path(data.demo.folder).expanduser().resolve())
    if data.text.get("tokenizer"):
        data.text.tokenizer = str(Path(data.text.tokenizer).expanduser().resolve())


def load_data(data: DictConfig, modalities: Sequence[str] | None, seed: int, task: Task | None = None,
              keep: Sequence[str] = SPLITS, labels_needed: bool = True) -> Table:
    """Generate the demo data if configured, then read, split and check the CSV(s) and every file they name;
    the task (default: classification) turns the labels into targets, fitted on the training split unless it
    already is (a checkpoint's task).

    A data.columns name that differs from configs/data/csv.yaml was set by the user: it must exist as written.
    """
    files = ", ".join(f"{key}={data[key]}" for key in ("csv", "train_csv", "val_csv", "test_csv") if data.get(key))
    separator = data.get("separator", "auto")  # .get: configs stored in checkpoints written before these keys existed
    log.info("data: %s; separator %s; on_missing=%s", files or "no CSV set", repr(separator), data.on_missing)
    log.info("data inputs: image %s px, resize %s, augment %s; text max %d tokens; audio %s Hz, %s s",
             data.image_size if data.image_size is not None else "(the encoder's)",
             data.get("resize") or "(the encoder's)", data.augment, data.text.max_length,
             data.audio.sample_rate if data.audio.sample_rate is not None else "(the encoder's)",
             data.audio.seconds)
    if data.get("demo"):
        ensure_demo(data.demo.folder, num_samples=data.demo.num_samples, seed=data.demo.seed,
                    image_size=data.image_size, sample_rate=data.audio.sample_rate, seconds=data.audio.seconds)
    defaults = OmegaConf.load(Path(config_dir()) / "data" / "csv.yaml").columns
    explicit = {key for key, name in data.columns.items() if name is not None and name != defaults.get(key)}
    table = load_table(csv=data.csv, train_csv=data.train_csv, val_csv=data.val_csv, test_csv=data.test_csv,
                       root=data.root, columns=data.columns, modalities=modalities, val_fraction=data.val_fraction,
                       test_fraction=data.test_fraction, seed=seed, keep=keep, on_missing=data.on_missing,
                       explicit=explicit, separator=separator, task=task, labels_needed=labels_needed)
    table.report = check_inputs(table, data.columns, data.on_missing,
                                allow_outside_root=bool(data.get("allow_outside_root", False)),
                                cache_dir=data.get("validation_cache"))
    sizes = ", ".join(f"{s} {len(f)}" for s, f in table.splits.items())
    log.info("data: %s rows; %s; modalities %s", sizes, table.task.describe() if labels_needed else "no labels read",
             ",".join(table.modalities))
    return table


def build_tokenizer(cfg: DictConfig, train_texts: Sequence[str]):
    """The text encoder's own tokenizer (from its `pretrained` folder), else data.text.tokenizer (a local folder),
    else a WordPiece tokenizer trained on the training texts."""
    pretrained = cfg.encoder.text.get("pretrained")
    if pretrained:
        log.info("tokenizer: the text encoder's own, from %s", pretrained)
        return load_pretrained_tokenizer(pretrained, key="encoder.text.pretrained")
    if cfg.data.text.tokenizer:
        log.info("tokenizer: %s (data.text.tokenizer)", cfg.data.text.tokenizer)
        return load_pretrained_tokenizer(cfg.data.text.tokenizer)
    log.info("tokenizer: WordPiece built from the training texts (data.text.vocab_size=%d%s)",
             cfg.data.text.vocab_size, ", lowercase" if cfg.data.text.lowercase else "")
    return train_wordpiece(train_texts, vocab_size=cfg.data.text.vocab_size, lowercase=cfg.data.text.lowercase)


def image_input(cfg: DictConfig) -> tuple[int, str]:
    """(size, resize mode) the images are prepared with: what the image encoder declares (encoder.image.image_size,
    encoder.image.resize), unless data.image_size / data.resize say otherwise."""
    encoder = cfg.encoder.image
    size = cfg.data.image_size if cfg.data.get("image_size") is not None else encoder.get("image_size")
    resize = cfg.data.get("resize") or encoder.get("resize")
    if size is None or resize is None:
        raise CrossmodalError("data.image_size / data.resize: null means 'as the image encoder declares', but "
                              f"encoder.image ({encoder.get('_target_')}) declares no image_size / resize; set them")
    return int(size), str(resize)


def audio_rate(cfg: DictConfig) -> int:
    """The sample rate clips are resampled to: what the audio encoder declares (encoder.audio.sample_rate),
    unless data.audio.sample_rate says otherwise."""
    rate = cfg.data.audio.sample_rate
    rate = rate if rate is not None else cfg.encoder.audio.get("sample_rate")
    if rate is None:
        raise CrossmodalError(f"data.audio.sample_rate: null means 'as the audio encoder declares', but encoder.audio "
                              f"({cfg.encoder.audio.get('_target_')}) declares no sample_rate; set it")
    return int(rate)


def make_split_loader(table: Table, split: str, cfg: DictConfig, tokenizer, *, batch_size: int, train: bool,
                      num_workers: int, seed: int, pin_memory: bool, drop_last: bool = False, augment: bool = True,
                      shard: bool = False):
    """A DataLoader over one split, preparing inputs as the encoders declare (image size and resize mode).
    `shard` (cmtrain under torchrun): this process's shard of each epoch, `batch_size` rows per process."""
    data = cfg.data
    size, resize = image_input(cfg) if "image" in table.modalities else (0, "squash")
    frame, images, tokens = table.splits[split], None, None
    if data.get("cache") == "preprocessed":
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


def make_loaders(cfg: DictConfig, table: Table, model: MultimodalModel, tokenizer, *, device: torch.device,
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
    settings = {"image": {"size": size, "resize": resize},
                "text": {"max_length": cfg.data.text.max_length,
                         "tokenizer": tokenizer_to_json(tokenizer) if tokenizer is not None else None},
                "audio": {"sample_rate": audio_rate(cfg), "seconds": cfg.data.audio.seconds}}

    def describe(m: str) -> dict:
        node = OmegaConf.to_container(encoder_node(cfg, m)[0])
        return {"modality": m, "encoder": node, "weights": weights_digest(model.encoders[m]), "inputs": settings[m],
                "precision": precision}

    def encode(m: str, distinct) -> Encoded:
        dataset = TableDataset(distinct.assign(target=0), [m], size, AudioSettings(audio_rate(cfg),
                               cfg.data.audio.seconds), train=False, augment=False, seed=seed, resize=resize)
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


def instantiate_node(node: DictConfig, where: str, **runtime: Any) -> Any:
    """hydra.utils.instantiate with a one-line CrossmodalError naming the config group on failure."""
    try:
        return instantiate(node, **runtime)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, CrossmodalError):
            raise cause from None
        detail = str(cause or err).strip().splitlines()[0]
        raise CrossmodalError(f"{where}: cannot build {node.get('_target_')}: {detail}") from None


TRANSFER_KEYS = ("freeze", "unfreeze_at_epoch", "lr_scale", "layer_decay")  # read here, not by the encoder
SPEC_KEYS = ("image_size", "resize")  # declared for the data pipeline; passed on only where the encoder takes them
RUNTIME_SPEC_KEYS = ("sample_rate",)  # declared in the YAML, passed at run time as the effective value


def encoder_node(cfg: DictConfig, modality: str, *, rebuild: bool = False) -> tuple[DictConfig, Transfer]:
    """The encoder's config without the keys the build reads itself, and its transfer-learning policy.
    `rebuild` (from a checkpoint): no weights file is read, the checkpoint's state dict follows."""
    node = OmegaConf.create(OmegaConf.to_container(cfg.encoder[modality], resolve=True))
    policy = Transfer(**{k: node.pop(k) for k in TRANSFER_KEYS if k in node})
    accepted = _parameters(node.get("_target_"))
    for key in SPEC_KEYS:
        if key in node and key not in accepted:
            node.pop(key)
    for key in RUNTIME_SPEC_KEYS:
        node.pop(key, None)
    if modality == "image" and "image_size" in node:
        node.image_size, node.resize = image_input(cfg)
    if rebuild and "weights" in node:
        node.weights = None
    return node, policy


def _parameters(target: str | None) -> set[str]:
    try:
        return set(inspect.signature(get_object(target)).parameters)
    except Exception:  # an unimportable target fails with its own one-line error when instantiated
        return set()


def build_task(cfg: DictConfig, state: Mapping[str, Any] | None = None) -> Task:
    """The configured task (configs/task/*.yaml); with `state` (from a checkpoint) already fitted."""
    task = instantiate_node(cfg.task, "task")
    if state is not None:
        task.load_state(state)
    return task


def build_model(cfg: DictConfig, modalities: Sequence[str], task: Task, tokenizer,
                architectures: Mapping[str, str | None] | None = None) -> MultimodalModel:
    """Encoders for the chosen modalities, the fusion over their widths, the (fitted) task's head.

    `architectures` ({modality: JSON text or None}, stored in a checkpoint) rebuild pretrained encoders without
    their original folders or weight files; the caller then loads the checkpoint's state dict."""
    runtime = {"image": {}, "audio": {"sample_rate": audio_rate(cfg)},
               "text": {"vocab_size": len(tokenizer) if tokenizer is not None else 0,
                        "max_length": cfg.data.text.max_length,
                        "pad_token_id": tokenizer.pad_token_id if tokenizer is not None else 0}}
    encoders, transfer = {}, {}
    for m in modalities:
        node, transfer[m] = encoder_node(cfg, m, rebuild=architectures is not None)
        stored = (architectures or {}).get(m)
        extra = {"architecture": json.loads(stored)} if stored else {}
        encoders[m] = instantiate_node(node, f"encoder/{m}", **runtime[m], **extra)
    in_dims = {m: e.out_dim for m, e in encoders.items()}
    fusion = task.fusion(in_dims) or instantiate_node(cfg.fusion, "fusion", in_dims=in_dims)
    return MultimodalModel(encoders, fusion, task.head(fusion.out_dim), modality_dropout=cfg.trainer.modality_dropout,
                           transfer=transfer)


@dataclass
class Rebuilt:
    """A trained model as its checkpoint alone describes it: the stored config, fitted task, tokenizer (or None)
    and the model with the checkpoint's weights (on the CPU)."""

    config: DictConfig
    task: Task
    tokenizer: Any
    model: MultimodalModel
    modalities: list[str]


def rebuild(state: Mapping[str, Any]) -> Rebuilt:
    """Rebuild what a checkpoint holds, without its run folder, data, pretrained folders or weight files (cmeval,
    and the teacher of a distillation)."""
    from crossmodal_cli.config.schema import upgrade
    from crossmodal_cli.data.modalities import tokenizer_from_json
    from crossmodal_cli.engine.checkpoint import task_state

    stored = upgrade(OmegaConf.create(state["config"]))
    task = build_task(stored, task_state(state))
    tokenizer = tokenizer_from_json(state["tokenizer"]) if state.get("tokenizer") else None
    modalities = list(state["modalities"])
    model = build_model(stored, modalities, task, tokenizer, architectures=state.get("encoders") or {})
    model.load_state_dict(state["model"])
    return Rebuilt(stored, task, tokenizer, model, modalities)


def architectures_of(model: MultimodalModel) -> dict[str, str | None]:
    """{modality: the encoder's architecture() as JSON text, or None}: stored in checkpoints."""
    return {m: (json.dumps(arch) if (arch := getattr(e, "architecture", lambda: None)()) is not None else None)
            for m, e in model.encoders.items()}


def _dry_build(node: DictConfig, where: str, **runtime: Any) -> Any:
    """instantiate on the meta device; a CrossmodalError from the constructor is raised, any other failure (an
    operation the meta device does not support) returns None and is left to the real build."""
    try:
        with torch.device("meta"):
            return instantiate(node, **runtime)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, CrossmodalError):
            raise cause from None
        if isinstance(cause, (AssertionError, ValueError, TypeError)):  # the constructor refused a value
            detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise CrossmodalError(f"{where}: cannot build {node.get('_target_')}: {detail}") from None
    except CrossmodalError:
        raise
    except Exception:  # not a user mistake this check can judge
        pass
    return None


def _dry_forward_image(encoder: torch.nn.Module, cfg: DictConfig) -> None:
    """One forward pass on the meta device (shapes only): an image size too small for the encoder's
    downsampling is one line now, not a traceback at the first training step."""
    size = image_input(cfg)[0]
    try:
        with torch.device("meta"):
            encoder(torch.zeros(2, 3, size, size, dtype=torch.uint8))
    except RuntimeError as err:
        if "too small" in str(err):
            raise CrossmodalError(f"data.image_size={size}: too small for encoder/image "
                                  f"({cfg.encoder.image._target_}): {str(err).splitlines()[0]}; use larger images "
                                  f"or an encoder that downsamples less") from None
    except Exception:  # an operation the meta device does not support: left to the real run
        pass


def check_buildable(cfg: DictConfig, modalities: Sequence[str]) -> Task:
    """Build the encoders, the fusion and the task once on the meta device (no memory, no weights) with stand-in
    run-time values, so a value only a constructor can judge (hidden_size not divisible by num_heads, a fusion
    order naming an unknown modality, …) fails in one line before any data is read. Returns the (unfitted)
    task, whose metric names trainer.monitor may name."""
    runtime = {"image": {}, "audio": {"sample_rate": audio_rate(cfg)},
               "text": {"vocab_size": 8, "max_length": cfg.data.text.max_length, "pad_token_id": 0}}
    widths = {}
    for m in modalities:
        encoder = _dry_build(encoder_node(cfg, m)[0], f"encoder/{m}", **runtime[m])
        widths[m] = int(getattr(encoder, "out_dim", 8))
        if m == "image" and encoder is not None:
            _dry_forward_image(encoder, cfg)
    _dry_build(cfg.fusion, "fusion", in_dims=widths)
    return build_task(cfg)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
