"""Schemas of the commands that read a checkpoint (cmeval, cmpredict) and their checks; the cmtrain schema and the
shared value types are in `schema.py`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional

from omegaconf import DictConfig

from crossmodal_cli.config.check import ABSENT, Rule, check_node
from crossmodal_cli.config.schema import Device, NonNegativeInt, Path_, PositiveInt, Precision, Workers, plain

# ---- cmeval ----------------------------------------------------------------------------------------------------

@dataclass
class EvalColumnsSchema:
    image: Optional[str] = None
    text: Optional[str] = None
    audio: Optional[str] = None
    label: Optional[str] = None


@dataclass
class EvalDataSchema:
    test_csv: Path_
    root: Path_
    allow_outside_root: Optional[bool]
    columns: EvalColumnsSchema = ABSENT


@dataclass
class EvalTrainerSchema:
    batch_size: Annotated[Optional[PositiveInt], "null = the training batch size"]
    device: Device
    precision: Precision
    num_workers: Workers


@dataclass
class EvalSchema:
    """configs/eval.yaml after composition."""

    ckpt: Annotated[str, Rule(lambda v: isinstance(v, str) and v.strip() != "", "a path to a .ckpt file")]
    split: Literal["train", "val", "test"]
    importance: bool
    data: EvalDataSchema
    trainer: EvalTrainerSchema


# ---- cmpredict -------------------------------------------------------------------------------------------------

@dataclass
class PredictColumnsSchema:
    image: Optional[str] = None
    text: Optional[str] = None
    audio: Optional[str] = None


@dataclass
class PredictDataSchema:
    csv: Annotated[str, Rule(lambda v: isinstance(v, str) and v.strip() != "", "a path to a CSV file")]
    root: Path_
    allow_outside_root: Optional[bool]
    on_missing: Optional[Literal["error", "drop", "zero"]]
    columns: PredictColumnsSchema = ABSENT


@dataclass
class PredictOptionsSchema:
    top_k: NonNegativeInt
    embeddings: bool


@dataclass
class PredictSchema:
    """configs/predict.yaml after composition."""

    ckpt: Annotated[str, Rule(lambda v: isinstance(v, str) and v.strip() != "", "a path to a .ckpt file")]
    data: PredictDataSchema
    predict: PredictOptionsSchema
    trainer: EvalTrainerSchema


def validate_predict(cfg: DictConfig) -> dict:
    """Check a composed cmpredict config; return it as plain values."""
    values = plain(cfg)
    check_node("", values, PredictSchema)
    return values


def validate_eval(cfg: DictConfig) -> dict:
    """Check a composed cmeval config; return it as plain values."""
    values = plain(cfg)
    check_node("", values, EvalSchema)
    return values
