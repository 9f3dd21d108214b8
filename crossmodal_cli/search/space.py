"""The search space: `hydra.sweeper.params` in Hydra's sweep syntax, as Optuna distributions.

`interval(a, b)`: a float (an int when both ends are ints) between a and b; `tag(log, interval(a, b))` on a log
scale; `choice(x, y, …)`: one of the values; `range(a, b[, step])`: an int from a up to, not including, b; a plain
value is fixed for every trial.
"""
from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from crossmodal_cli.errors import CrossmodalError


def _choice(values: list) -> Any:
    import optuna

    if any(isinstance(v, (list, dict)) for v in values):
        raise CrossmodalError("a choice(...) of lists or mappings cannot be searched; give plain values")
    return optuna.distributions.CategoricalDistribution(values)


def distribution(override: Override) -> Any:
    """One sweep override -> an Optuna distribution."""
    import optuna

    value = override.value()
    key = override.get_key_element()
    if isinstance(value, ChoiceSweep):
        return _choice(list(value.list))
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if all(isinstance(v, int) for v in (start, stop, step)) and step > 0 and stop > start:
            return optuna.distributions.IntDistribution(start, stop - 1 - (stop - 1 - start) % step, step=step)
        return _choice(list(override.sweep_iterator()))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if value.start >= value.end or (log and value.start <= 0):
            raise CrossmodalError(f"hydra.sweeper.params.{key}: interval({value.start}, {value.end}) needs start "
                                  f"< end{' and start > 0 on a log scale' if log else ''}")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return optuna.distributions.IntDistribution(value.start, value.end, log=log)
        return optuna.distributions.FloatDistribution(value.start, value.end, log=log)
    raise CrossmodalError(f"hydra.sweeper.params.{key}: {override.input_line!r} is not a search range; use "
                          f"interval(a, b), tag(log, interval(a, b)), choice(x, y) or range(a, b)")


def parse(params: dict[str, str], arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
    """`hydra.sweeper.params` and the command line's overrides -> (the searched distributions by key, the fixed
    overrides every job gets). A command-line sweep (`key=a,b` or a range) is searched too and replaces the
    configured range of the same key."""
    parser = OverridesParser.create()
    lines = [f"{k}={v}" for k, v in (params or {}).items()]
    searched: dict[str, Any] = {}
    fixed: list[str] = []
    for override in parser.parse_overrides(lines) + parser.parse_overrides(arguments):
        key = override.get_key_element()
        fixed = [f for f in fixed if f.split("=", 1)[0] != key]
        searched.pop(key, None)
        if override.is_sweep_override():
            searched[key] = distribution(override)
        else:
            fixed.append(override.input_line)
    return searched, fixed


def as_override(key: str, value: Any) -> str:
    """A sampled value as a Hydra override (strings quoted when Hydra's grammar needs it)."""
    if isinstance(value, str) and not value.replace("_", "").replace("-", "").replace(".", "").replace("/", "") \
            .isalnum():
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        return f"{key}='{escaped}'"
    return f"{key}={value}"
