"""Which of a table's columns hold what: the configured names (data.columns) matched against a CSV's header or a
DataFrame's columns, and the modalities in use.

A name the user set (`explicit`) must be in the header as written; a default name may match a header that differs
only in case (logged). Every mismatch is a one-line `CrossmodalError` naming the file (or DataFrame), the
configured key and the columns it has.
"""
from __future__ import annotations

import logging
from typing import Collection, Mapping, Sequence

from crossmodal_cli.data.csvfile import printable
from crossmodal_cli.data.sources import Source
from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)

MODALITIES = ("image", "text", "audio", "tabular")
TABULAR = "tabular/"  # the key (and canonical column) of tabular column C is "tabular/C": data.columns.tabular


def tabular_keys(names: Sequence[object]) -> dict[str, str]:
    """{"tabular/C": C} for the columns of data.columns.tabular, in their order."""
    return {f"{TABULAR}{name}": str(name) for name in names}


def modality_keys(modality: str, columns: Collection[str]) -> list[str]:
    """The keys of `columns` (data.columns keys, tabular ones expanded) that hold `modality`'s input."""
    if modality == "tabular":
        return [key for key in columns if key.startswith(TABULAR)]
    return [modality]


def setting(key: str) -> str:
    """The config key a column key comes from: data.columns.KEY, or data.columns.tabular."""
    return "data.columns.tabular" if key.startswith(TABULAR) else f"data.columns.{key}"


def list_columns(names: Sequence[str], kind: str = "CSV") -> str:
    """'the CSV has columns: a, b, …' (at most 30) for "not found" errors."""
    shown = [printable(c, 60) for c in names]
    return f"the {kind} has columns: {', '.join(shown[:30])}{', ...' if len(shown) > 30 else ''}"


def match_columns(header: Sequence[str], name: str, columns: Mapping[str, str],
                  explicit: Collection[str]) -> dict[str, str]:
    """{data.columns key: header name} for every configured name in `header` (of the CSV or DataFrame `name`).

    A name in `explicit` (set by the user) must match exactly. A default name may also match one header that
    differs only in case (logged); two such headers are an error naming both.
    """
    found, relaxed = {}, []
    for key, configured in columns.items():
        if configured is None or str(configured) == "":
            continue
        configured = str(configured)
        if configured in header:
            found[key] = configured
            continue
        similar = [h for h in header if h.casefold() == configured.casefold()]
        if key in explicit or not similar:
            continue
        if len(similar) > 1:
            raise CrossmodalError(f"{name}: columns {' and '.join(repr(printable(h, 60)) for h in similar)} both "
                                  f"match data.columns.{key}={configured!r} when case is ignored; rename one, or set "
                                  f"data.columns.{key} to the one to use")
        found[key] = similar[0]
        relaxed.append(f"'{printable(similar[0], 60)}' for data.columns.{key}={configured!r}")
    if relaxed:
        log.info("%s: using column %s (the case differs)", name, ", ".join(relaxed))
    return found


def require(source: Source, keys: Sequence[str], columns: Mapping[str, str]) -> None:
    """One-line error naming the configured columns in `keys` that `source` lacks and listing the ones it has."""
    missing = []
    for key in keys:
        if key in source.found:
            continue
        name = str(columns[key])
        similar = [h for h in source.frame.columns if h.casefold() == name.casefold()]
        hint = f"; '{printable(similar[0], 60)}' differs only in case" if similar else ""
        missing.append(f"'{printable(name, 60)}' ({setting(key)}{hint})")
    if missing:
        raise CrossmodalError(f"{source.name}: column{'s' if len(missing) > 1 else ''} {', '.join(missing)} not "
                              f"found; {list_columns(list(source.frame.columns), source.kind)}")


def choose_modalities(modalities: Sequence[str] | None, source: Source | None, columns: Mapping[str, str],
                      explicit: Collection[str]) -> list[str]:
    """The modalities asked for, or (None) those whose column(s) `source` has; a column the user named must exist.
    `columns` holds the tabular columns as their own keys (`tabular_keys`)."""
    if modalities is None and source is None:
        raise CrossmodalError("no data given: set data.csv=FILE.csv, or data.train_csv and data.val_csv")
    if modalities is None:
        require(source, [key for m in MODALITIES for key in modality_keys(m, columns)
                         if key in explicit or m in explicit], columns)
        modalities = [m for m in MODALITIES
                      if (keys := modality_keys(m, columns)) and all(key in source.found for key in keys)]
        if not modalities:
            names = ", ".join(f"'{printable(columns[m], 60)}'" for m in MODALITIES if m in columns)
            raise CrossmodalError(f"{source.name}: none of the modality columns {names} found (name yours with "
                                  f"data.columns.image / text / audio, or list columns of numbers and categories "
                                  f"in data.columns.tabular); {list_columns(list(source.frame.columns), source.kind)}")
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise CrossmodalError(f"modalities={list(modalities)}: choose one or more of {', '.join(MODALITIES)}")
    if "tabular" in modalities and not modality_keys("tabular", columns):
        raise CrossmodalError("modalities includes tabular, but data.columns.tabular names no column; list the "
                              "columns of numbers and categories, e.g. data.columns.tabular=[price,brand]")
    return [m for m in MODALITIES if m in modalities]
