"""Check a composed config against a schema: types, ranges, unknown and missing keys, `_target_` signatures.

Why not Hydra's own structured-config validation alone: it reports a wrong type as a multi-line Hydra error with
exit status 1, cannot express ranges (`grad_clip > 0`) or choices tied to run time, and knows nothing of the
keyword arguments a `_target_` accepts. This pass reads the same dataclasses a structured config would, and turns
the first problem into one line, `KEY=VALUE: must be …`, raised as `CrossmodalError` (exit status 2).

A schema is a dataclass whose field types may carry `Range(...)`, `Rule(...)` and a doc string in `Annotated`;
a field whose type is `Annotated[dict, Target(Keys, runtime=...)]` is an instantiated group: its `_target_` must
import, its keys must be parameters of that target (typed by the signature, ranged by the `Keys` dataclass), and
its required parameters must be in the config unless the code supplies them at run time (`runtime`).
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing

from typing import Any, Literal, Mapping, Sequence, Union

from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.settings.rules import Range, Rule, Target

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}




def _fmt(value: Any) -> str:
    """A value as the user would write it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_fmt(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _split(hint: Any) -> tuple[Any, list]:
    """Annotated[T, meta...] -> (T, [meta...]); anything else -> (hint, [])."""
    if typing.get_origin(hint) is typing.Annotated:
        return hint.__origin__, list(hint.__metadata__)
    return hint, []


def _is_union(origin: Any) -> bool:
    return origin is Union or origin is types.UnionType


def describe(hint: Any) -> str:
    """What a value of this type looks like, to complete 'must be …'."""
    base, meta = _split(hint)
    for item in meta:
        if isinstance(item, Rule):
            return item.expected
    ranges = " ".join(item.describe() for item in meta if isinstance(item, Range))
    origin, args = typing.get_origin(base), typing.get_args(base)
    if _is_union(origin):
        options = [describe(a) for a in args if a is not type(None)]
        text = " or ".join(options)
        return f"{text}, or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(_fmt(a) for a in args)
    if base is bool:
        return "true or false"
    if base is int:
        return f"a whole number {ranges}".strip()
    if base is float:
        return f"a number {ranges}".strip()
    if base is str:
        return "a string"
    if origin in (list, tuple, Sequence) or base in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values in brackets, each {describe(args[0])}"
        return f"a list in brackets, each {describe(args[0])}" if args else "a list in brackets, e.g. [a,b]"
    if origin in (dict, Mapping) or base is dict:
        return "a mapping {key: value}"
    return getattr(base, "__name__", str(base))


def conforms(value: Any, hint: Any) -> bool:
    """True when `value` (a plain YAML value) has the type and lies in the ranges of `hint`."""
    base, meta = _split(hint)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if base is Any or base is inspect.Parameter.empty:
        ok = True
    elif _is_union(origin):
        ok = (value is None and type(None) in args) or any(conforms(value, a) for a in args if a is not type(None))
    elif origin is Literal:
        ok = any(value == a and type(value) is type(a) for a in args)
    elif base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif base is str:
        ok = isinstance(value, str)
    elif origin in (list, tuple, Sequence) or base in (list, tuple):
        ok = isinstance(value, (list, tuple))
        if ok and origin is tuple and args and args[-1] is not Ellipsis:
            ok = len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
        elif ok and args:
            ok = all(conforms(v, args[0]) for v in value)
    elif origin in (dict, Mapping) or base is dict:
        ok = isinstance(value, Mapping)
    else:
        ok = True  # a library type (e.g. torch.Tensor in torch.optim signatures): not a YAML value to check
    if not ok or value is None:
        return ok
    for item in meta:
        if isinstance(item, Range) and not (isinstance(value, (int, float)) and item.holds(value)):
            return False
        if isinstance(item, Rule) and not item.test(value):
            return False
    return True


def _doc(hint: Any) -> str:
    return next((m for m in _split(hint)[1] if isinstance(m, str)), "")


def check_value(key: str, value: Any, hint: Any) -> None:
    """Raise `KEY=VALUE: must be …` when value does not conform to hint."""
    if not conforms(value, hint):
        doc = _doc(hint)
        raise CrossmodalError(f"{key}={_fmt(value)}: must be {describe(hint)}{f' ({doc})' if doc else ''}")


def _unknown(key: str, name: str, known: Sequence[str], what: str) -> CrossmodalError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return CrossmodalError(f"{key}: unknown key {what}; {hint}known keys: {', '.join(sorted(known))}")


def check_node(prefix: str, node: Any, schema: type, *, partial: bool = False) -> None:
    """Check a config mapping against a schema dataclass (recursively). `partial`: absent keys are not errors."""
    if not isinstance(node, Mapping):
        raise CrossmodalError(f"{prefix}={_fmt(node)}: must be a group of keys ({prefix}.KEY=VALUE)")
    hints = typing.get_type_hints(schema, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for name in node:
        if name not in fields:
            key = f"{prefix}.{name}" if prefix else str(name)
            raise _unknown(key, str(name), list(fields), f"in {prefix or 'the top level'}")
    # plain values first: an instantiated group imports its `_target_` (torch), a plain value answers at once
    for name in sorted(node, key=lambda n: _imports(hints[n])):
        check_field(f"{prefix}.{name}" if prefix else str(name), node[name], hints[name], partial=partial)
    if not partial:
        for name, f in fields.items():
            if name not in node and f.default is dataclasses.MISSING:
                raise CrossmodalError(f"{prefix}.{name}: missing; add it to your config ({describe(hints[name])})")


def _imports(hint: Any) -> bool:
    """Whether checking a value of this type imports code: an instantiated group (Target), or a group holding one."""
    base, meta = _split(hint)
    if any(isinstance(m, Target) for m in meta):
        return True
    nested = next((a for a in (base, *typing.get_args(base)) if dataclasses.is_dataclass(a)), None)
    return nested is not None and any(_imports(h) for h in typing.get_type_hints(nested, include_extras=True).values())


def check_field(key: str, value: Any, hint: Any, *, partial: bool = False) -> None:
    """One value: a nested schema, an instantiated group (Target) or a plain typed value."""
    base, meta = _split(hint)
    target = next((m for m in meta if isinstance(m, Target)), None)
    args = typing.get_args(base)
    nested = next((a for a in (base, *args) if dataclasses.is_dataclass(a)), None)
    if target is not None:
        check_target(key, value, target)
    elif nested is not None and not (value is None and type(None) in args):
        check_node(key, value, nested, partial=partial)
    else:
        check_value(key, value, hint)


def _signature(target: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def _annotations(target: Any) -> dict[str, Any]:
    """The target's parameter types, resolved; {} when they cannot be read."""
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable forward references in a third-party signature: check keys, not types
        return {}


def locate(key: str, path: Any) -> Any:
    """The object a `_target_` names, or a one-line error."""
    from hydra.utils import get_object

    if not isinstance(path, str) or not path:
        raise CrossmodalError(f"{key}._target_={_fmt(path)}: must be a dotted import path, e.g. "
                              f"crossmodal_cli.fusion.concat.ConcatFusion")
    try:
        return get_object(path)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CrossmodalError(f"{key}._target_={path}: cannot import it ({first[:160]})") from None


def check_target(key: str, node: Any, spec: Target) -> None:
    """An instantiated group: importable `_target_`, known keys, typed and ranged values, required ones present."""
    if not isinstance(node, Mapping) or "_target_" not in node:
        raise CrossmodalError(f"{key}={_fmt(node)}: must be a config group with a _target_ (choose one from "
                              f"configs/{key.replace('.', '/')}/)")
    target = locate(key, node["_target_"])
    signature = _signature(target)
    if signature is None:
        return
    params = {n: p for n, p in signature.parameters.items()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n != "self"}
    open_keys = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    types_ = _annotations(target)
    ranged = typing.get_type_hints(spec.keys, include_extras=True)
    for name, value in node.items():
        if name in HYDRA_KEYS:
            continue
        if name not in params and name not in spec.own and not open_keys:
            raise _unknown(f"{key}.{name}", str(name), [n for n in params if n not in spec.runtime] + sorted(spec.own),
                           f"for {node['_target_']}")
        if name in spec.runtime and name not in spec.own:
            raise CrossmodalError(f"{key}.{name}: set by crossmodal at run time; remove it from the config")
        if name in ranged:
            check_field(f"{key}.{name}", value, ranged[name])  # a nested group (encoder.<m>.lora) key by key
        elif name in types_:
            check_value(f"{key}.{name}", value, types_[name])
    for name, p in params.items():
        if p.default is p.empty and name not in node and name not in spec.runtime:
            raise CrossmodalError(f"{key}.{name}: missing; {node['_target_']} needs it "
                                  f"(add {key}.{name}=… or put it in the YAML)")
