"""What a setting may hold: bounds (`Range`), checks no type expresses (`Rule`), instantiated groups (`Target`),
optional keys (`ABSENT`) and the value types the settings share (`PositiveInt`, `Fraction`, ...).

They are annotations on the settings dataclasses (`Annotated[int, Range(ge=1)]`), read by `config/check.py` when a
composed config is checked; the running code sees only the plain values.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Optional, Union


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ge/gt (>=, >) and le/lt (<=, <)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def holds(self, value: float) -> bool:
        return not ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt) or
                    (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt))

    def describe(self) -> str:
        low = f">= {_fmt(self.ge)}" if self.ge is not None else f"> {_fmt(self.gt)}" if self.gt is not None else ""
        high = f"<= {_fmt(self.le)}" if self.le is not None else f"< {_fmt(self.lt)}" if self.lt is not None else ""
        return " and ".join(part for part in (low, high) if part)


@dataclass(frozen=True)
class Rule:
    """A check no type expresses: `test(value)` must hold; `expected` completes 'must be …'."""

    test: Callable[[Any], bool]
    expected: str


@dataclass(frozen=True)
class Target:
    """Marks an instantiated config group: `keys` (a dataclass) ranges its known keys; `runtime` names the
    constructor arguments the code passes itself; `own` the keys the code reads itself (allowed whatever the
    target's signature)."""

    keys: type
    runtime: frozenset[str] = frozenset()
    own: frozenset[str] = frozenset()


class Absent:
    """Default of a schema field that may be left out of the config."""

    def __repr__(self) -> str:
        return "absent"


ABSENT: Any = Absent()


def _fmt(value: float | None) -> str:
    return str(value)


PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, lt=1)]            # a probability or share that cannot be 1
UnitInterval = Annotated[float, Range(ge=0, le=1)]
Modality = Literal["image", "text", "audio", "tabular"]
Device = Annotated[str, Rule(lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
                             "auto, cpu, cuda or cuda:N")]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
Workers = Union[NonNegativeInt, Literal["auto"]]
Path_ = Optional[str]
Seed = Annotated[int, Range(ge=0, le=2**32 - 1)]


