"""One schema per config group (the keys `configs/GROUP/*.yaml` may hold, their types and ranges), and the
start-up checks of `cmtrain` and `cmeval` built on them.

Plain groups (`data`, `trainer`, the top level) list every key. Instantiated groups (`encoder/*`, `fusion`,
`task`, `optimizer`, `scheduler`) take their keys from the `_target_`'s signature; the `*Keys` dataclasses here
give the ranges of the keys the built-in targets share (a user's own target is still checked for unknown,
missing and wrongly typed keys).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from crossmodal_cli.config.check import ABSENT, Range, Rule, Target, check_node
from crossmodal_cli.errors import CrossmodalError

PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, lt=1)]            # a probability or share that cannot be 1
UnitInterval = Annotated[float, Range(ge=0, le=1)]
Modality = Literal["image", "text", "audio"]
Device = Annotated[str, Rule(lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
                             "auto, cpu, cuda or cuda:N")]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
Workers = Union[NonNegativeInt, Literal["auto"]]
Path_ = Optional[str]
Seed = Annotated[int, Range(ge=0, le=2**32 - 1)]


# ---- plain groups ----------------------------------------------------------------------------------------------

Column = Annotated[Union[str, int], "a column name of the CSV"]  # a header may be a number ("0")


@dataclass
class ColumnsSchema:
    image: Column
    text: Column
    audio: Column
    label: Column
    split: Optional[Column] = None


@dataclass
class TextDataSchema:
    tokenizer: Path_
    vocab_size: Annotated[int, Range(ge=16, le=1_000_000), "size of the WordPiece vocabulary trained on the texts"]
    lowercase: bool
    max_length: Annotated[int, Range(ge=2, le=8192), "tokens per text, [CLS] and [SEP] included"]


@dataclass
class AudioDataSchema:
    sample_rate: Annotated[Optional[Annotated[int, Range(ge=1000, le=192_000)]],
                           "samples per second, e.g. 16000; null = the audio encoder's"]
    seconds: Annotated[float, Range(gt=0, le=600), "clip length in seconds"]


@dataclass
class DemoSchema:
    folder: str
    num_samples: Annotated[int, Range(ge=30), "rows of the generated demo data"]
    seed: Seed


@dataclass
class DataSchema:
    csv: Path_
    train_csv: Path_
    val_csv: Path_
    test_csv: Path_
    root: Path_
    allow_outside_root: bool
    columns: ColumnsSchema
    on_missing: Literal["error", "drop", "zero"]
    validation_cache: Path_
    val_fraction: Fraction
    test_fraction: Fraction
    image_size: Annotated[Optional[Annotated[int, Range(ge=16, le=4096)]], "pixels per side; null = the image encoder's"]
    resize: Optional[Literal["squash", "shorter_side_center_crop"]]
    augment: bool
    cache: Annotated[Optional[Literal["preprocessed"]], "null = decode every image every epoch"]
    cache_dir: str
    text: TextDataSchema
    audio: AudioDataSchema
    demo: Optional[DemoSchema]
    separator: Annotated[Literal["auto", ",", ";", "\t", "\\t", "tab", "|"], "tab: \\t or tab"]


@dataclass
class TrainerSchema:
    max_epochs: PositiveInt
    batch_size: PositiveInt
    accumulate_grad_batches: PositiveInt
    grad_clip: Annotated[Optional[PositiveFloat], "a maximum gradient norm; null = no clipping"]
    precision: Precision
    device: Device
    num_workers: Workers
    modality_dropout: Fraction
    monitor: Annotated[Optional[str], "val/loss or val/METRIC of the task; null = the task's own metric"]
    monitor_mode: Annotated[Optional[Literal["max", "min"]], "null = as the monitored metric needs"]
    early_stopping_patience: Optional[PositiveInt]
    drop_last: bool
    checkpoint_every_n_steps: Optional[PositiveInt]
    keep_last_k: NonNegativeInt
    max_bad_steps: PositiveInt
    log_every_n_steps: PositiveInt
    progress_bar: bool
    deterministic: bool
    compile: bool
    channels_last: Annotated[Union[bool, Literal["auto"]], "auto (on CUDA), true or false"]
    tf32: bool
    feature_cache: Annotated[bool, "true needs every encoder frozen: encoder.<m>.freeze=true"]
    cache_dir: str


# ---- instantiated groups: ranges of the keys the built-in targets use -------------------------------------------

Channels = Annotated[list[PositiveInt], Rule(lambda v: isinstance(v, list) and len(v) > 0 and
                                             all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in v),
                                             "a non-empty list of whole numbers >= 1, e.g. [16,32,64]")]
RGB = Annotated[list[float], Rule(lambda v: isinstance(v, list) and len(v) == 3 and
                                  all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v),
                                  "a list of 3 numbers (R, G, B), e.g. [0.5,0.5,0.5]")]
PositiveRGB = Annotated[list[float], Rule(lambda v: isinstance(v, list) and len(v) == 3 and
                                          all(isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0
                                              for c in v), "a list of 3 numbers > 0, e.g. [0.5,0.5,0.5]")]


@dataclass
class EncoderKeys:
    channels: Channels = ABSENT
    mean: RGB = ABSENT
    std: PositiveRGB = ABSENT
    arch: str = ABSENT
    hidden_size: PositiveInt = ABSENT
    num_layers: PositiveInt = ABSENT
    num_heads: PositiveInt = ABSENT
    intermediate_size: PositiveInt = ABSENT
    dropout: Fraction = ABSENT
    pooling: Literal["mean", "cls"] = ABSENT
    n_mels: Annotated[int, Range(ge=8)] = ABSENT
    image_size: Annotated[int, Range(ge=16, le=4096), "pixels per side"] = ABSENT
    resize: Literal["squash", "shorter_side_center_crop"] = ABSENT
    freeze: bool = ABSENT
    unfreeze_at_epoch: Annotated[Optional[PositiveInt], "null = stays frozen"] = ABSENT
    lr_scale: PositiveFloat = ABSENT
    layer_decay: Annotated[float, Range(gt=0, le=1)] = ABSENT
    pretrained: Annotated[str, Rule(lambda v: isinstance(v, str) and v.strip() != "",
                                    "a local folder with a Hugging Face model")] = ABSENT
    n_fft: Annotated[int, Range(ge=16)] = ABSENT
    hop_ms: PositiveFloat = ABSENT
    sample_rate: Annotated[int, Range(ge=1000, le=192_000), "samples per second"] = ABSENT


@dataclass
class FusionKeys:
    proj_dim: PositiveInt = ABSENT
    hidden_dim: PositiveInt = ABSENT
    width: PositiveInt = ABSENT
    depth: PositiveInt = ABSENT
    heads: PositiveInt = ABSENT
    layers: PositiveInt = ABSENT
    rank: PositiveInt = ABSENT
    dropout: Fraction = ABSENT
    max_tokens: PositiveInt = ABSENT
    combine: Literal["mean", "learned"] = ABSENT
    aux_loss_weight: NonNegativeFloat = ABSENT
    order: list[Modality] = ABSENT


@dataclass
class TaskKeys:
    label_smoothing: Fraction = ABSENT
    class_weights: Annotated[Optional[Literal["balanced"]], "null or balanced"] = ABSENT
    separator: Annotated[str, Rule(lambda v: isinstance(v, str) and v != "", "a non-empty string, e.g. '|'")] = ABSENT
    pos_weight: Annotated[Optional[Literal["balanced"]], "null or balanced"] = ABSENT
    threshold: Annotated[float, Range(gt=0, lt=1), "a probability, e.g. 0.5"] = ABSENT
    loss: Literal["mse", "huber"] = ABSENT
    huber_delta: PositiveFloat = ABSENT
    embed_dim: PositiveInt = ABSENT
    temperature: PositiveFloat = ABSENT
    heads: Annotated[dict, Rule(lambda v: isinstance(v, dict) and len(v) > 0,
                                "a mapping of label columns to {type: …, weight: …}")] = ABSENT
    monitor: Optional[str] = ABSENT


@dataclass
class OptimizerKeys:
    lr: Annotated[float, Range(gt=0), "the learning rate, e.g. 1e-3"] = ABSENT
    weight_decay: NonNegativeFloat = ABSENT
    betas: Annotated[list[float], Rule(lambda v: isinstance(v, list) and len(v) == 2 and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in v),
        "a list of 2 numbers in [0, 1), e.g. [0.9,0.999]")] = ABSENT
    eps: PositiveFloat = ABSENT
    momentum: NonNegativeFloat = ABSENT
    dampening: NonNegativeFloat = ABSENT
    nesterov: bool = ABSENT
    amsgrad: bool = ABSENT


@dataclass
class SchedulerKeys:
    warmup_epochs: Annotated[float, Range(ge=0), "epochs of linear warm-up, may be fractional"] = ABSENT
    min_lr_ratio: UnitInterval = ABSENT
    max_lr_ratio: PositiveFloat = ABSENT
    step_epochs: PositiveFloat = ABSENT
    gamma: PositiveFloat = ABSENT


BUILD_KEYS = frozenset({"freeze", "unfreeze_at_epoch", "lr_scale", "layer_decay", "image_size", "resize"})


@dataclass
class EncodersSchema:
    image: Annotated[dict, Target(EncoderKeys, frozenset({"architecture"}), BUILD_KEYS)]
    text: Annotated[dict, Target(EncoderKeys, frozenset({"vocab_size", "max_length", "pad_token_id", "architecture"}),
                                 BUILD_KEYS)]
    audio: Annotated[dict, Target(EncoderKeys, frozenset({"sample_rate", "architecture"}),
                                  BUILD_KEYS | {"sample_rate"})]


@dataclass
class DistillSchema:
    teacher: Annotated[Path_, "a .ckpt written by cmtrain (a classification on the same labels)"]
    alpha: Annotated[float, Range(ge=0, le=1), "a weight in [0, 1], e.g. 0.5"]
    temperature: PositiveFloat


@dataclass
class TrainSchema:
    """configs/train.yaml after composition (without the `hydra` node)."""

    data: DataSchema
    encoder: EncodersSchema
    fusion: Annotated[dict, Target(FusionKeys, frozenset({"in_dims"}))]
    task: Annotated[dict, Target(TaskKeys, frozenset())]
    optimizer: Annotated[dict, Target(OptimizerKeys, frozenset({"params"}))]
    scheduler: Annotated[dict, Target(SchedulerKeys, frozenset({"optimizer", "steps_per_epoch", "max_epochs"}))]
    trainer: TrainerSchema
    seed: Seed
    modalities: Annotated[Union[Modality, list[Modality], None], Rule(
        lambda v: v is None or v in ("image", "text", "audio") or (
            isinstance(v, list) and 0 < len(v) == len(set(v)) and all(m in ("image", "text", "audio") for m in v)),
        "null (every modality with a column) or a list of distinct modalities in brackets, e.g. [image,text]")]
    resume: Path_
    distill: DistillSchema


# ---- the checks ------------------------------------------------------------------------------------------------

MISSING_HINTS = {"ckpt": "pass ckpt=PATH/TO/checkpoints/best.ckpt (a checkpoint written by cmtrain)",
                 "data.csv": "pass data.csv=NEW.csv (the rows to predict for)"}


def plain(cfg: DictConfig) -> dict:
    """The config as plain values, resolved, without the `hydra` node; one line for `???` and bad interpolations."""
    for key in OmegaConf.missing_keys(cfg):
        if key == "hydra" or key.startswith("hydra."):
            continue
        raise CrossmodalError(f"{key}: missing; {MISSING_HINTS.get(key, f'set it on the command line ({key}=…)')}")
    body = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    try:
        return OmegaConf.to_container(body, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "config"
        detail = str(err).strip().splitlines()[0]
        raise CrossmodalError(f"{key}: cannot resolve its value ({detail})") from None


def validate_train(cfg: DictConfig, *, partial: bool = False) -> dict:
    """Check a composed cmtrain config; return it as plain values. `partial` (a stored config being resumed):
    keys that did not exist when it was written may be absent."""
    values = plain(cfg)
    check_node("", values, TrainSchema, partial=partial)
    data = values["data"]
    if data["val_fraction"] + data["test_fraction"] >= 1:
        raise CrossmodalError(f"data.val_fraction={data['val_fraction']} data.test_fraction="
                              f"{data['test_fraction']}: together they must be < 1 (the rest is the training split)")
    _check_files(values)
    fusion = values["fusion"]
    if isinstance(fusion.get("width"), int) and isinstance(fusion.get("heads"), int) and fusion["width"] % fusion["heads"]:
        raise CrossmodalError(f"fusion.heads={fusion['heads']}: must divide fusion.width={fusion['width']} "
                              f"(e.g. fusion.heads=4 or 8)")
    return values


def _check_files(values: dict) -> None:
    """Files and folders the config names exist (the demo CSV is generated later, so it is not checked)."""
    data = values["data"]
    if not data.get("demo"):
        for key in ("csv", "train_csv", "val_csv", "test_csv"):
            if data.get(key) and not Path(data[key]).expanduser().is_file():
                raise CrossmodalError(f"data.{key}={data[key]}: CSV file not found")
    for key, value in (("data.root", data.get("root")), ("data.text.tokenizer", data["text"].get("tokenizer"))):
        if value and not Path(value).expanduser().is_dir():
            raise CrossmodalError(f"{key}={value}: no such folder")
    teacher = (values.get("distill") or {}).get("teacher")
    if teacher and not Path(teacher).expanduser().is_file():
        raise CrossmodalError(f"distill.teacher={teacher}: checkpoint not found (pass a .ckpt written by cmtrain, "
                              f"e.g. outputs/DATE/TIME/checkpoints/best.ckpt)")
    resume = values.get("resume")
    if resume:
        path = Path(resume).expanduser()
        checkpoint = path if path.suffix == ".ckpt" else path / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file():
            raise CrossmodalError(f"resume={resume}: no checkpoint at {checkpoint} (pass a run folder or a .ckpt "
                                  f"file written by cmtrain)")


# keys added after checkpoint format 1: {dotted key: the value that reproduces the behaviour before the key existed}
ADDED_KEYS = {"data.resize": "squash", "data.separator": ",", "trainer.feature_cache": False,
              "trainer.cache_dir": "~/.cache/crossmodal/features", "data.cache": None,
              "data.cache_dir": "~/.cache/crossmodal/preprocessed", "trainer.compile": False,
              "trainer.channels_last": "auto", "trainer.tf32": True,
              "distill": {"teacher": None, "alpha": 0.5, "temperature": 2.0}}


def upgrade(stored: DictConfig) -> DictConfig:
    """A config stored in an older checkpoint, with the keys added since then set to the behaviour it had."""
    for key, value in ADDED_KEYS.items():
        if OmegaConf.select(stored, key, default=ABSENT) is ABSENT:
            OmegaConf.update(stored, key, value, force_add=True)
    return stored


def schema_of(name: str) -> Any:
    """The schema dataclass of a config group by its folder name (for docs and tests)."""
    from crossmodal_cli.config.commands import EvalSchema, PredictSchema

    return {"data": DataSchema, "trainer": TrainerSchema, "train": TrainSchema, "eval": EvalSchema,
            "predict": PredictSchema}[name]
