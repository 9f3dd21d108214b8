"""From settings to the objects of a run: the task, the model (encoders, fusion, head), the optimizer and the
schedule; and the one rebuild path from a checkpoint.

Values known only at run time (feature widths, class count, vocabulary size, the effective input spec) are passed
to `hydra.utils.instantiate` here; no config object reaches a model, encoder, fusion or task.
"""
from __future__ import annotations

import copy
import inspect
import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate

from crossmodal_cli.data.tabular import TabularPreprocessor
from crossmodal_cli.encoders import Encoder, require_encoder
from crossmodal_cli.encoders.adapters import add_adapters
from crossmodal_cli.encoders.checkpointing import enable_checkpointing
from crossmodal_cli.engine.checkpoint import stored_config, task_state
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.features import refuse_adapters
from crossmodal_cli.fusion import Fusion
from crossmodal_cli.model import MultimodalModel, Transfer
from crossmodal_cli.pipeline.inputs import audio_rate, image_input
from crossmodal_cli.settings import from_values
from crossmodal_cli.settings.run import RunSettings
from crossmodal_cli.tasks.base import Task

log = logging.getLogger(__name__)
TRANSFER_KEYS = ("freeze", "unfreeze_at_epoch", "lr_scale", "layer_decay")  # read here, not by the encoder
ADAPTATION_KEYS = ("lora", "gradient_checkpointing")  # applied here to the built encoder (`adapt_encoder`)
SPEC_KEYS = ("image_size", "resize")  # declared for the data pipeline; passed on only where the encoder takes them
RUNTIME_SPEC_KEYS = ("sample_rate",)  # declared in the YAML, passed at run time as the effective value
FUSED_OPTIMIZERS = ("torch.optim.AdamW", "torch.optim.Adam", "torch.optim.SGD")


def instantiate_node(node: Mapping[str, Any], where: str, **runtime: Any) -> Any:
    """hydra.utils.instantiate with a one-line CrossmodalError naming the config group on failure."""
    try:
        return instantiate(node, **runtime)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, CrossmodalError):
            raise cause from None
        detail = str(cause or err).strip().splitlines()[0]
        raise CrossmodalError(f"{where}: cannot build {node.get('_target_')}: {detail}") from None


def encoder_node(cfg: RunSettings, modality: str, *, rebuild: bool = False) -> tuple[dict, Transfer]:
    """The encoder's config without the keys the build reads itself, and its transfer-learning policy.
    `rebuild` (from a checkpoint): no weights file is read, the checkpoint's state dict follows."""
    node = copy.deepcopy(cfg.encoder[modality])
    policy = Transfer(**{k: node.pop(k) for k in TRANSFER_KEYS if k in node})
    lora = node.get("lora") or {}
    if policy.freeze and lora.get("r"):
        raise CrossmodalError(f"encoder.{modality}.lora.r={lora['r']} with encoder.{modality}.freeze=true: choose one "
                              f"(adapters train while the encoder's weights stay fixed; freeze trains nothing in it)")
    for key in ADAPTATION_KEYS:
        node.pop(key, None)
    accepted = _parameters(node.get("_target_"))
    for key in SPEC_KEYS:
        if key in node and key not in accepted:
            node.pop(key)
    for key in RUNTIME_SPEC_KEYS:
        node.pop(key, None)
    if modality == "image" and "image_size" in node:
        node["image_size"], node["resize"] = image_input(cfg)
    if rebuild and "weights" in node:
        node["weights"] = None
    return node, policy


def _parameters(target: str | None) -> set[str]:
    try:
        return set(inspect.signature(get_object(target)).parameters)
    except Exception:  # an unimportable target fails with its own one-line error when instantiated
        return set()


def adapt_encoder(encoder: Encoder, cfg: RunSettings, modality: str) -> Encoder:
    """The encoder's `lora` adapters (r > 0; encoders/adapters.py) and `gradient_checkpointing`
    (encoders/checkpointing.py), applied in place after it is built: in a new run and when a checkpoint is rebuilt
    alike, so the stored state dict (adapters included) loads into the same modules."""
    node = cfg.encoder[modality]
    if (node.get("lora") or {}).get("r"):
        add_adapters(encoder, node["lora"], f"encoder.{modality}.lora")
    if node.get("gradient_checkpointing"):
        enable_checkpointing(encoder, f"encoder.{modality}.gradient_checkpointing")
    return encoder


def encoder_runtime(cfg: RunSettings, tokenizer, tabular: TabularPreprocessor | None = None) -> dict[str, dict]:
    """The encoders' constructor arguments known only at run time: the sample rate, the vocabulary, the fitted
    tabular columns (numeric count and each categorical column's cardinality)."""
    return {"image": {}, "audio": {"sample_rate": audio_rate(cfg)},
            "text": {"vocab_size": len(tokenizer) if tokenizer is not None else 0,
                     "max_length": cfg.data.text.max_length,
                     "pad_token_id": tokenizer.pad_token_id if tokenizer is not None else 0},
            "tabular": {"numeric_columns": len(tabular.numeric_columns) if tabular is not None else 0,
                        "cardinalities": tabular.cardinalities if tabular is not None else []}}


def build_task(cfg: RunSettings, state: Mapping[str, Any] | None = None) -> Task:
    """The configured task (configs/task/*.yaml); with `state` (from a checkpoint) already fitted."""
    task = instantiate_node(cfg.task, "task")
    if state is not None:
        task.load_state(state)
    return task


def build_model(cfg: RunSettings, modalities: Sequence[str], task: Task, tokenizer,
                architectures: Mapping[str, str | None] | None = None,
                tabular: TabularPreprocessor | None = None) -> MultimodalModel:
    """Encoders for the chosen modalities, the fusion over their widths (none for a task that reads the encoders'
    outputs itself: `Task.uses_fusion`), the (fitted) task's head. `tabular`: the fitted tabular preprocessing,
    which sizes the tabular encoder.

    `architectures` ({modality: JSON text or None}, stored in a checkpoint) rebuild pretrained encoders without
    their original folders or weight files; the caller then loads the checkpoint's state dict."""
    runtime = encoder_runtime(cfg, tokenizer, tabular)
    encoders, transfer = {}, {}
    for m in modalities:
        node, transfer[m] = encoder_node(cfg, m, rebuild=architectures is not None)
        stored = (architectures or {}).get(m)
        extra = {"architecture": json.loads(stored)} if stored else {}
        encoder = require_encoder(instantiate_node(node, f"encoder/{m}", **runtime[m], **extra), f"encoder/{m}",
                                  node.get("_target_"))
        encoders[m] = adapt_encoder(encoder, cfg, m)
    in_dims = {m: e.out_dim for m, e in encoders.items()}
    if task.uses_fusion:
        fusion = require_fusion(instantiate_node(cfg.fusion, "fusion", in_dims=in_dims), cfg.fusion.get("_target_"))
        head = task.head(fusion.out_dim)
    else:
        fusion, head = None, task.head(in_dims)
    return MultimodalModel(encoders, fusion, head, modality_dropout=cfg.trainer.modality_dropout, transfer=transfer)


def require_fusion(fusion: Any, target: str | None) -> Fusion:
    """`fusion` itself when it is a `Fusion` (fusion/__init__.py: the interface); otherwise one line saying what to
    implement. A user's own fusion subclasses it as the built-in ones do."""
    if not isinstance(fusion, Fusion):
        raise CrossmodalError(f"fusion: {target} is not a crossmodal_cli.fusion.Fusion; subclass it (set out_dim, "
                              f"write forward(encoded, present) -> [B, out_dim]; summary is optional)")
    return fusion


def architectures_of(model: MultimodalModel) -> dict[str, str | None]:
    """{modality: the encoder's architecture() as JSON text, or None}: stored in checkpoints."""
    return {m: (json.dumps(arch) if (arch := e.architecture()) is not None else None)
            for m, e in model.encoders.items()}


@dataclass
class Rebuilt:
    """A trained model as its checkpoint alone describes it: the stored settings, fitted task, tokenizer (or None),
    the model with the checkpoint's weights (on the CPU) and the fitted tabular preprocessing (or None)."""

    config: RunSettings
    task: Task
    tokenizer: Any
    model: MultimodalModel
    modalities: list[str]
    tabular: TabularPreprocessor | None = None


def rebuild(state: Mapping[str, Any]) -> Rebuilt:
    """Rebuild what a checkpoint holds, without its run folder, data, pretrained folders or weight files (cmeval,
    cmpredict, the Python API's `load`, and the teacher of a distillation)."""
    from crossmodal_cli.data.modalities import tokenizer_from_json

    stored = from_values(RunSettings, stored_config(state))
    task = build_task(stored, task_state(state))
    tokenizer = tokenizer_from_json(state["tokenizer"]) if state.get("tokenizer") else None
    modalities = list(state["modalities"])
    tabular = TabularPreprocessor.from_state(state["tabular"]) if state.get("tabular") else None
    model = build_model(stored, modalities, task, tokenizer, architectures=state.get("encoders") or {},
                        tabular=tabular)
    model.load_state_dict(state["model"])
    return Rebuilt(stored, task, tokenizer, model, modalities, tabular)


def build_optimizer(cfg: RunSettings, model: MultimodalModel) -> torch.optim.Optimizer:
    """The configured optimizer over the model's parameter groups (each encoder's layers at optimizer.lr x its
    lr_scale x layer_decay**depth, fusion + head at optimizer.lr); biases and normalisation weights (1-d
    parameters) get no weight decay. Frozen parameters are included, so unfreezing needs no new optimizer. On
    CUDA, torch's AdamW/Adam/SGD run fused (`fused=True`) unless the optimizer config sets `fused` itself."""
    make = instantiate_node(cfg.optimizer, "optimizer")
    base = cfg.optimizer["lr"]
    groups = []
    for group in model.parameter_groups():
        decay = [p for p in group["params"] if p.ndim > 1]
        no_decay = [p for p in group["params"] if p.ndim <= 1]
        lr = base * group["lr_scale"]
        groups += [{"params": decay, "lr": lr, "name": group["name"], "lr_scale": group["lr_scale"]},
                   {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{group['name']}/no_decay",
                    "lr_scale": group["lr_scale"]}]
    extra = {}
    if (cfg.optimizer["_target_"] in FUSED_OPTIMIZERS and "fused" not in cfg.optimizer
            and any(p.is_cuda for p in model.parameters())):
        extra["fused"] = True  # one kernel per parameter group instead of a loop over tensors (CUDA only)
    try:
        return make([g for g in groups if g["params"]], **extra)
    except (TypeError, ValueError) as err:
        raise CrossmodalError(f"optimizer: {err}") from None


def build_scheduler(cfg: RunSettings, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The configured learning-rate schedule (configs/scheduler/*.yaml, `_partial_`) over `optimizer`."""
    return instantiate(cfg.scheduler)(optimizer, steps_per_epoch=steps_per_epoch, max_epochs=cfg.trainer.max_epochs)


def _dry_build(node: Mapping[str, Any], where: str, **runtime: Any) -> Any:
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


def _dry_adapt(encoder: Encoder, cfg: RunSettings, modality: str) -> None:
    """`adapt_encoder` on the meta-device encoder: target modules matching nothing, a method that cannot adapt
    them, an encoder that cannot checkpoint: one line before any data is read."""
    try:
        with torch.device("meta"):
            adapt_encoder(encoder, cfg, modality)
    except CrossmodalError:
        raise
    except Exception:  # an operation the meta device does not support: left to the real build
        pass


def _dry_forward_image(encoder: Encoder, cfg: RunSettings) -> None:
    """One forward pass on the meta device (shapes only): an image size too small for the encoder's
    downsampling is one line now, not a traceback at the first training step."""
    size = image_input(cfg)[0]
    try:
        with torch.device("meta"):
            encoder(torch.zeros(2, 3, size, size, dtype=torch.uint8))
    except RuntimeError as err:
        if "too small" in str(err):
            raise CrossmodalError(f"data.image_size={size}: too small for encoder/image "
                                  f"({cfg.encoder.image['_target_']}): {str(err).splitlines()[0]}; use larger images "
                                  f"or an encoder that downsamples less") from None
    except Exception:  # an operation the meta device does not support: left to the real run
        pass


def check_buildable(cfg: RunSettings, modalities: Sequence[str]) -> Task:
    """Build the encoders, the fusion and the task once on the meta device (no memory, no weights) with stand-in
    run-time values, so a value only a constructor can judge (hidden_size not divisible by num_heads, a fusion
    order naming an unknown modality, …) fails in one line before any data is read. Returns the (unfitted)
    task, whose metric names trainer.monitor may name."""
    columns = [str(c) for c in cfg.data.columns.tabular]
    categorical = [c for c in columns if c in {str(k) for k in cfg.data.tabular.categorical}]
    runtime = {"image": {}, "audio": {"sample_rate": audio_rate(cfg)},
               "text": {"vocab_size": 8, "max_length": cfg.data.text.max_length, "pad_token_id": 0},
               "tabular": {"numeric_columns": max(len(columns) - len(categorical), 0),
                           "cardinalities": [4] * len(categorical)}}  # stand-ins: the types are found in the data
    widths = {}
    for m in modalities:
        node = encoder_node(cfg, m)[0]
        if cfg.trainer.feature_cache and (cfg.encoder[m].get("lora") or {}).get("r"):
            refuse_adapters(m, cfg.encoder[m]["lora"]["r"])
        encoder = _dry_build(node, f"encoder/{m}", **runtime[m])
        if encoder is None:  # the meta device could not build it: a stand-in width, the real build judges it
            widths[m] = 8
            continue
        widths[m] = int(require_encoder(encoder, f"encoder/{m}", node.get("_target_")).out_dim)
        _dry_adapt(encoder, cfg, m)
        if m == "image":
            _dry_forward_image(encoder, cfg)
    fusion = _dry_build(cfg.fusion, "fusion", in_dims=widths)
    if fusion is not None:
        require_fusion(fusion, cfg.fusion.get("_target_"))
    return build_task(cfg)
