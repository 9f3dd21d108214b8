"""The settings of a training run: one frozen dataclass per config group, the schema being the settings.

`config/check.py` checks a composed config against these classes (types, ranges, unknown and missing keys; the
`Target` groups against their `_target_`'s signature) and `settings.from_values` builds them from its plain values,
so nothing below the entry points sees a Hydra or OmegaConf object. Adding a key is three edits: its YAML line, its
field here, and the code that reads it.

Plain groups (`data`, `trainer`, the top level) list every key. Instantiated groups (`encoder.*`, `fusion`, `task`,
`optimizer`, `scheduler`) stay plain dicts with a `_target_` for `hydra.utils.instantiate`; the `*Keys` classes give
the ranges of the keys the built-in targets share (a user's own target is still checked for unknown, missing and
wrongly typed keys).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Union

from crossmodal_cli.settings.rules import (ABSENT, Device, Fraction, Modality, NonNegativeFloat, NonNegativeInt,
                                           Path_, PositiveFloat, PositiveInt, Precision, Range, Rule, Seed, Target,
                                           UnitInterval, Workers)

# ---- plain groups ----------------------------------------------------------------------------------------------

Column = Annotated[Union[str, int], "a column name of the CSV"]  # a header may be a number ("0")


@dataclass(frozen=True)
class ColumnsSettings:
    image: Column
    text: Column
    audio: Column
    label: Column
    tabular: Annotated[list[Column], Rule(
        lambda v: isinstance(v, list) and all(isinstance(c, (str, int)) and not isinstance(c, bool) and str(c) != ""
                                              for c in v),
        "a list of column names in brackets, e.g. [price,brand]; [] = no tabular columns")]
    split: Optional[Column] = None


@dataclass(frozen=True)
class TextSettings:
    tokenizer: Path_
    vocab_size: Annotated[int, Range(ge=16, le=1_000_000), "size of the WordPiece vocabulary trained on the texts"]
    lowercase: bool
    max_length: Annotated[int, Range(ge=2, le=8192), "tokens per text, [CLS] and [SEP] included"]


@dataclass(frozen=True)
class AudioDataSettings:
    sample_rate: Annotated[Optional[Annotated[int, Range(ge=1000, le=192_000)]],
                           "samples per second, e.g. 16000; null = the audio encoder's"]
    seconds: Annotated[float, Range(gt=0, le=600), "clip length in seconds"]


ColumnNames = Annotated[list[Column], Rule(
    lambda v: isinstance(v, list) and all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in v),
    "a list of column names in brackets, e.g. [brand]")]


@dataclass(frozen=True)
class TabularDataSettings:
    """data.tabular: how the columns of data.columns.tabular are read (crossmodal_cli/data/tabular.py)."""

    categorical: Annotated[ColumnNames, "columns read as categories even when every cell is a number"]
    numeric: Annotated[ColumnNames, "columns that must hold numbers (a word is an error naming its row)"]
    transform: Literal["standard", "quantile", "log"]
    transforms: Annotated[Optional[dict], Rule(lambda v: v is None or isinstance(v, dict) and all(
        isinstance(t, str) for t in v.values()), "null, or a mapping of numeric columns to standard, quantile or "
        "log, e.g. {price:log}")]
    min_count: Annotated[int, Range(ge=1), "rarer categories go to the unknown id"]
    as_text: Annotated[bool, "true: write the columns into the text instead of encoding them"]


@dataclass(frozen=True)
class DemoSettings:
    folder: str
    num_samples: Annotated[int, Range(ge=30), "rows of the generated demo data"]
    seed: Seed


@dataclass(frozen=True)
class DataSettings:
    csv: Path_
    train_csv: Path_
    val_csv: Path_
    test_csv: Path_
    root: Path_
    allow_outside_root: bool
    columns: ColumnsSettings
    on_missing: Literal["error", "drop", "zero"]
    validation_cache: Path_
    val_fraction: Fraction
    test_fraction: Fraction
    folds: Annotated[Optional[Annotated[int, Range(ge=2)]], "K-fold cross-validation; null = one validation split"]
    fold: Annotated[NonNegativeInt, "the fold that validates (0 .. data.folds-1)"]
    image_size: Annotated[Optional[Annotated[int, Range(ge=16, le=4096)]], "pixels per side; null = the image encoder's"]
    resize: Optional[Literal["squash", "shorter_side_center_crop"]]
    augment: bool
    cache: Annotated[Optional[Literal["preprocessed"]], "null = decode every image every epoch"]
    cache_dir: str
    text: TextSettings
    audio: AudioDataSettings
    demo: Optional[DemoSettings]
    separator: Annotated[Literal["auto", ",", ";", "\t", "\\t", "tab", "|"], "tab: \\t or tab"]
    tabular: TabularDataSettings


@dataclass(frozen=True)
class TrainerSettings:
    max_epochs: NonNegativeInt  # 0: no training, the initial model is validated and saved (engine/loop.py)
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


@dataclass(frozen=True)
class LoraKeys:
    """encoder.<m>.lora: low-rank adapters (crossmodal_cli/encoders/adapters.py); every key in the YAML."""

    r: Annotated[int, Range(ge=0), "the adapters' rank; 0 = no adapters"]
    alpha: PositiveFloat
    dropout: Fraction
    target_modules: Annotated[Optional[Union[str, list[str]]], Rule(
        lambda v: v is None or (isinstance(v, str) and v != "") or (
            isinstance(v, list) and len(v) > 0 and all(isinstance(n, str) and n for n in v)),
        "null (the family's default), a list of module name suffixes in brackets, e.g. [query,value], or a regex")]
    method: Literal["lora", "loha", "lokr"]


@dataclass(frozen=True)
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
    gradient_checkpointing: bool = ABSENT
    lora: LoraKeys = ABSENT
    pretrained: Annotated[str, Rule(lambda v: isinstance(v, str) and v.strip() != "",
                                    "a local folder with a Hugging Face model")] = ABSENT
    n_fft: Annotated[int, Range(ge=16)] = ABSENT
    hop_ms: PositiveFloat = ABSENT
    embedding_dim: PositiveInt = ABSENT
    ffn_factor: PositiveFloat = ABSENT
    sample_rate: Annotated[int, Range(ge=1000, le=192_000), "samples per second"] = ABSENT


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class TaskKeys:
    label_smoothing: Fraction = ABSENT
    class_weights: Annotated[Optional[Literal["balanced"]], "null or balanced"] = ABSENT
    separator: Annotated[str, Rule(lambda v: isinstance(v, str) and v != "", "a non-empty string, e.g. '|'")] = ABSENT
    pos_weight: Annotated[Optional[Literal["balanced"]], "null or balanced"] = ABSENT
    threshold: Annotated[float, Range(gt=0, lt=1), "a probability, e.g. 0.5"] = ABSENT
    loss: Annotated[Literal["mse", "huber", "infonce", "sigmoid", "auto"],
                    "regression: mse or huber; retrieval: infonce, sigmoid or auto"] = ABSENT
    huber_delta: PositiveFloat = ABSENT
    embed_dim: PositiveInt = ABSENT
    temperature: PositiveFloat = ABSENT
    sigmoid_bias: float = ABSENT
    init_from_encoders: Annotated[Union[bool, Literal["auto"]], "auto, true or false"] = ABSENT
    template: Annotated[str, Rule(lambda v: isinstance(v, str) and "{label}" in v,
                                  "a string with {label} where the class name goes, e.g. 'a photo of a {label}'")] = ABSENT
    classify: Annotated[list[Modality], Rule(lambda v: isinstance(v, list) and 0 < len(v) == len(set(v)) and all(
        m in ("image", "text") for m in v), "a list of distinct modalities from image, text, e.g. [image]")] = ABSENT
    heads: Annotated[dict, Rule(lambda v: isinstance(v, dict) and len(v) > 0,
                                "a mapping of label columns to {type: …, weight: …}")] = ABSENT
    monitor: Optional[str] = ABSENT


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class SchedulerKeys:
    warmup_epochs: Annotated[float, Range(ge=0), "epochs of linear warm-up, may be fractional"] = ABSENT
    min_lr_ratio: UnitInterval = ABSENT
    max_lr_ratio: PositiveFloat = ABSENT
    step_epochs: PositiveFloat = ABSENT
    gamma: PositiveFloat = ABSENT


BUILD_KEYS = frozenset({"freeze", "unfreeze_at_epoch", "lr_scale", "layer_decay", "image_size", "resize",
                        "gradient_checkpointing", "lora"})


@dataclass(frozen=True)
class EncoderSettings:
    image: Annotated[dict, Target(EncoderKeys, frozenset({"architecture"}), BUILD_KEYS)]
    text: Annotated[dict, Target(EncoderKeys, frozenset({"vocab_size", "max_length", "pad_token_id", "architecture"}),
                                 BUILD_KEYS)]
    audio: Annotated[dict, Target(EncoderKeys, frozenset({"sample_rate", "architecture"}),
                                  BUILD_KEYS | {"sample_rate"})]
    tabular: Annotated[dict, Target(EncoderKeys, frozenset({"numeric_columns", "cardinalities", "architecture"}),
                                    BUILD_KEYS)]

    def __getitem__(self, modality: str) -> dict:
        """encoder[m]: the config group of modality m's encoder."""
        return getattr(self, modality)


@dataclass(frozen=True)
class DistillSettings:
    teacher: Annotated[Path_, "a .ckpt written by cmtrain (a classification on the same labels)"]
    alpha: Annotated[float, Range(ge=0, le=1), "a weight in [0, 1], e.g. 0.5"]
    temperature: PositiveFloat


@dataclass(frozen=True)
class RunSettings:
    """configs/train.yaml after composition (without the `hydra` node): everything a training run is built from."""

    data: DataSettings
    encoder: EncoderSettings
    fusion: Annotated[dict, Target(FusionKeys, frozenset({"in_dims"}))]
    task: Annotated[dict, Target(TaskKeys, frozenset())]
    optimizer: Annotated[dict, Target(OptimizerKeys, frozenset({"params"}))]
    scheduler: Annotated[dict, Target(SchedulerKeys, frozenset({"optimizer", "steps_per_epoch", "max_epochs"}))]
    trainer: TrainerSettings
    seed: Seed
    modalities: Annotated[Union[Modality, list[Modality], None], Rule(
        lambda v: v is None or v in ("image", "text", "audio", "tabular") or (
            isinstance(v, list) and 0 < len(v) == len(set(v))
            and all(m in ("image", "text", "audio", "tabular") for m in v)),
        "null (every modality with a column) or a list of distinct modalities in brackets, e.g. [image,tabular]")]
    resume: Path_
    distill: DistillSettings


