"""The settings of the commands that read a checkpoint (cmeval, cmpredict): one frozen dataclass per config group
of configs/eval.yaml and configs/predict.yaml (see `settings/run.py` for how they are checked and built)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional

from crossmodal_cli.settings.rules import Device, NonNegativeInt, Path_, PositiveInt, Precision, Rule, Workers

# ---- cmeval ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalColumnsSettings:
    image: Optional[str] = None
    text: Optional[str] = None
    audio: Optional[str] = None
    label: Optional[str] = None


@dataclass(frozen=True)
class EvalDataSettings:
    test_csv: Path_
    root: Path_
    allow_outside_root: Optional[bool]
    columns: Optional[EvalColumnsSettings] = None


@dataclass(frozen=True)
class CheckpointTrainerSettings:
    batch_size: Annotated[Optional[PositiveInt], "null = the training batch size"]
    device: Device
    precision: Precision
    num_workers: Workers


@dataclass(frozen=True)
class EvalSettings:
    """configs/eval.yaml after composition."""

    ckpt: Annotated[str, Rule(lambda v: isinstance(v, str) and v.strip() != "", "a path to a .ckpt file")]
    split: Literal["train", "val", "test"]
    importance: bool
    data: EvalDataSettings
    trainer: CheckpointTrainerSettings


# ---- cmpredict -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PredictColumnsSettings:
    image: Optional[str] = None
    text: Optional[str] = None
    audio: Optional[str] = None


@dataclass(frozen=True)
class PredictDataSettings:
    csv: Annotated[str, Rule(lambda v: isinstance(v, str) and v.strip() != "", "a path to a CSV file")]
    root: Path_
    allow_outside_root: Optional[bool]
    on_missing: Optional[Literal["error", "drop", "zero"]]
    columns: Optional[PredictColumnsSettings] = None


@dataclass(frozen=True)
class PredictOptionsSettings:
    top_k: NonNegativeInt
    embeddings: bool


@dataclass(frozen=True)
class PredictSettings:
    """configs/predict.yaml after composition."""

    ckpt: Annotated[str, Rule(lambda v: isinstance(v, str) and v.strip() != "", "a path to a .ckpt file")]
    data: PredictDataSettings
    predict: PredictOptionsSettings
    trainer: CheckpointTrainerSettings
