"""From a resolved config to the objects a run needs: device, table, tokenizer, loaders, model, optimizer.

Shared by cmtrain and cmeval, so a checkpoint's stored config rebuilds exactly the model that was trained.
Values known only at run time (feature widths, class count, vocabulary size) are passed to `instantiate` here;
no Hydra config object reaches a model, encoder, fusion or dataset.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from crossmodal_cli.data.dataset import AudioSettings, Collate, TableDataset, make_loader
from crossmodal_cli.data.demo import ensure_demo
from crossmodal_cli.data.modalities import load_pretrained_tokenizer, train_wordpiece
from crossmodal_cli.data.table import SPLITS, Table, load_table
from crossmodal_cli.data.validation import check_inputs
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.model import MultimodalModel
from crossmodal_cli.paths import config_dir

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


def load_data(data: DictConfig, modalities: Sequence[str] | None, seed: int, classes: Sequence[str] | None = None,
              keep: Sequence[str] = SPLITS) -> Table:
    """Generate the demo data if configured, then read, split and check the CSV(s) and every file they name.

    A data.columns name that differs from configs/data/csv.yaml was set by the user: it must exist as written.
    """
    files = ", ".join(f"{key}={data[key]}" for key in ("csv", "train_csv", "val_csv", "test_csv") if data.get(key))
    separator = data.get("separator", "auto")  # .get: configs stored in checkpoints written before these keys existed
    text = data.text.tokenizer or f"WordPiece built from the training texts (vocab {data.text.vocab_size}" \
        f"{', lowercase' if data.text.lowercase else ''})"
    log.info("data: %s; separator %s; on_missing=%s", files or "no CSV set", repr(separator), data.on_missing)
    log.info("data inputs: image %d px, augment %s; text %s, max %d tokens; audio %d Hz, %s s", data.image_size,
             data.augment, text, data.text.max_length, data.audio.sample_rate, data.audio.seconds)
    if data.get("demo"):
        ensure_demo(data.demo.folder, num_samples=data.demo.num_samples, seed=data.demo.seed,
                    image_size=data.image_size, sample_rate=data.audio.sample_rate, seconds=data.audio.seconds)
    defaults = OmegaConf.load(Path(config_dir()) / "data" / "csv.yaml").columns
    explicit = {key for key, name in data.columns.items() if name is not None and name != defaults.get(key)}
    table = load_table(csv=data.csv, train_csv=data.train_csv, val_csv=data.val_csv, test_csv=data.test_csv,
                       root=data.root, columns=data.columns, modalities=modalities, val_fraction=data.val_fraction,
                       test_fraction=data.test_fraction, seed=seed, classes=classes, keep=keep,
                       on_missing=data.on_missing, explicit=explicit, separator=separator)
    table.report = check_inputs(table, data.columns, data.on_missing,
                                allow_outside_root=bool(data.get("allow_outside_root", False)),
                                cache_dir=data.get("validation_cache"))
    sizes = ", ".join(f"{s} {len(f)}" for s, f in table.splits.items())
    log.info("data: %s rows; %d classes; modalities %s", sizes, len(table.classes), ",".join(table.modalities))
    return table


def build_tokenizer(data: DictConfig, train_texts: Sequence[str]):
    """The configured local tokenizer, or a WordPiece tokenizer trained on the training texts."""
    if data.text.tokenizer:
        return load_pretrained_tokenizer(data.text.tokenizer)
    return train_wordpiece(train_texts, vocab_size=data.text.vocab_size, lowercase=data.text.lowercase)


def make_split_loader(table: Table, split: str, data: DictConfig, tokenizer, *, batch_size: int, train: bool,
                      num_workers: int, seed: int, pin_memory: bool, drop_last: bool = False):
    dataset = TableDataset(table.splits[split], table.modalities, data.image_size,
                           AudioSettings(data.audio.sample_rate, data.audio.seconds), train=train,
                           augment=data.augment, seed=seed)
    return make_loader(dataset, Collate(tokenizer, data.text.max_length), batch_size=batch_size, shuffle=train,
                       num_workers=num_workers, seed=seed, pin_memory=pin_memory, drop_last=drop_last)


def _instantiate(node: DictConfig, where: str, **runtime: Any) -> Any:
    """hydra.utils.instantiate with a one-line CrossmodalError naming the config group on failure."""
    try:
        return instantiate(node, **runtime)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, CrossmodalError):
            raise cause from None
        detail = str(cause or err).strip().splitlines()[0]
        raise CrossmodalError(f"{where}: cannot build {node.get('_target_')}: {detail}") from None


def build_model(cfg: DictConfig, modalities: Sequence[str], num_classes: int, tokenizer) -> tuple[MultimodalModel, Any]:
    """Encoders for the chosen modalities, the fusion over their widths, the task head. Returns (model, task)."""
    runtime = {"image": {}, "audio": {"sample_rate": cfg.data.audio.sample_rate},
               "text": {"vocab_size": len(tokenizer) if tokenizer is not None else 0,
                        "max_length": cfg.data.text.max_length,
                        "pad_token_id": tokenizer.pad_token_id if tokenizer is not None else 0}}
    encoders = {m: _instantiate(cfg.encoder[m], f"encoder/{m}", **runtime[m]) for m in modalities}
    fusion = _instantiate(cfg.fusion, "fusion", in_dims={m: e.out_dim for m, e in encoders.items()})
    task = _instantiate(cfg.task, "task", num_classes=num_classes)
    return MultimodalModel(encoders, fusion, task.head(fusion.out_dim),
                           modality_dropout=cfg.trainer.modality_dropout), task


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


def check_buildable(cfg: DictConfig, modalities: Sequence[str]) -> list[str]:
    """Build the encoders, the fusion and the task once on the meta device (no memory, no weights) with stand-in
    run-time values, so a value only a constructor can judge (hidden_size not divisible by num_heads, a fusion
    order naming an unknown modality, …) fails in one line before any data is read. Returns the task's metric
    names (what trainer.monitor may name)."""
    runtime = {"image": {}, "audio": {"sample_rate": cfg.data.audio.sample_rate},
               "text": {"vocab_size": 64, "max_length": cfg.data.text.max_length, "pad_token_id": 0}}
    widths = {}
    for m in modalities:
        encoder = _dry_build(cfg.encoder[m], f"encoder/{m}", **runtime[m])
        widths[m] = int(getattr(encoder, "out_dim", 8))
    _dry_build(cfg.fusion, "fusion", in_dims=widths)
    task = _instantiate(cfg.task, "task", num_classes=2)
    return list(task.metrics().keys())


def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer; biases and normalisation weights (1-d parameters) get no weight decay."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    make = _instantiate(cfg.optimizer, "optimizer")
    try:
        return make([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
    except (TypeError, ValueError) as err:
        raise CrossmodalError(f"optimizer: {err}") from None


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
