"""Typed, frozen settings: what the code below the entry points reads instead of a Hydra config.

An entry point (cmtrain, cmeval, cmpredict, the Python API) composes the YAML configs, checks them once
(`config/`), and calls `from_values` to turn the plain values into these dataclasses; nothing below it sees a
`DictConfig`. `run.py` holds the training run's groups, `commands.py` those of cmeval and cmpredict, `rules.py`
the annotations that say what each key may hold.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, TypeVar

from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.settings.rules import Target

T = TypeVar("T")


def from_values(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    """The settings dataclass `cls` from checked plain values (nested groups become their dataclasses; instantiated
    groups, marked `Target`, stay plain dicts). Keys the values leave out take the field's default; a required key
    they leave out (a config stored by an older crossmodal, without an upgrade in engine/checkpoint.ADDED_KEYS) is
    one line naming it."""
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name in values:
            kwargs[f.name] = _convert(values[f.name], hints[f.name], key)
        elif f.default is dataclasses.MISSING:
            raise CrossmodalError(f"{key}: missing from the config (a config stored by an older crossmodal lacks "
                                  f"it); set it, or start a new run")
    return cls(**kwargs)


def _convert(value: Any, hint: Any, key: str) -> Any:
    if value is None:
        return None
    meta = list(getattr(hint, "__metadata__", ()))
    base = hint.__origin__ if meta else hint
    nested = next((a for a in (base, *typing.get_args(base)) if dataclasses.is_dataclass(a)), None)
    if nested is not None and isinstance(value, Mapping) and not any(isinstance(m, Target) for m in meta):
        return from_values(nested, value, f"{key}.")
    return value


def to_values(settings: Any) -> dict:
    """Plain values (nested dicts and lists) of a settings dataclass: what a checkpoint stores as its config."""
    return dataclasses.asdict(settings)
