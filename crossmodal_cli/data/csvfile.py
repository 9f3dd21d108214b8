"""Reading one CSV file: UTF-8 decoding, the separator, exact line numbers, and where its paths lead.

The csv module (not pandas) parses, because it reports where each row starts even when a quoted cell spans
several lines; every way a file can be bad is a one-line `CrossmodalError` naming it.
"""
from __future__ import annotations

import codecs
import csv as csv_module
import io
import logging
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from crossmodal_cli.errors import CrossmodalError

log = logging.getLogger(__name__)

SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}  # detection prefers the first on a tie
SEPARATOR_ALIASES = {"\\t": "\t", "tab": "\t"}  # a tab as a command line passes it (data.separator='\t')


def printable(value: object, limit: int = 120) -> str:
    """`value` as one printable line for an error message: line breaks and control characters escaped, long text cut."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."


FRAME_SOURCE = "DataFrame"
FIRST_ROW_LINE = 2  # a DataFrame row's `line` is its position + 2: the line it would have in a CSV with a header


def refuse_repeated_columns(header: list[str], where: str, what: str) -> None:
    """One line naming the column names that appear more than once in `what` (a CSV's header, a DataFrame's
    columns) of `where`: a column would be ambiguous."""
    named = [name for name in header if name]
    repeated = sorted({name for name in named if named.count(name) > 1})
    if repeated:
        raise CrossmodalError(f"{where}: column name{'s' if len(repeated) > 1 else ''} "
                              f"{', '.join(repr(printable(n, 60)) for n in repeated)} appear more than once in the "
                              f"{what}; give every column a distinct name")


def frame_source(role: str) -> str:
    """The `source` of rows read from an in-memory DataFrame in `role` ("csv": the one table to split, or a split
    name): "DataFrame", or e.g. "val DataFrame", so (source, line) stays unique across the frames of a table."""
    return FRAME_SOURCE if role == "csv" else f"{role} {FRAME_SOURCE}"


FRAME_SOURCES = frozenset(frame_source(role) for role in ("csv", "train", "val", "test"))


def where(source: str, line: int) -> str:
    """'line 7' of a CSV, or 'DataFrame row 5' (the 0-based position, as `DataFrame.iloc` counts) of a DataFrame."""
    return f"DataFrame row {line - FIRST_ROW_LINE}" if source in FRAME_SOURCES else f"line {line}"


def describe_rows(frame: pd.DataFrame, limit: int = 5) -> str:
    """'N rows, first at lines a, b, c' for error messages; 'N rows (DataFrame rows a, b)' for a DataFrame's rows."""
    in_frame = "source" in frame and len(frame) and frame["source"].iloc[0] in FRAME_SOURCES
    lines = ", ".join(str(n - FIRST_ROW_LINE if in_frame else n) for n in frame["line"].head(limit))
    more = "" if len(frame) <= limit else ", ..."
    s = "s" if len(frame) != 1 else ""
    return f"{len(frame)} row{s} ({'DataFrame row' if in_frame else 'line'}{s} {lines}{more})"


def _decode(path: Path, data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CrossmodalError(f"{path}: the CSV is UTF-16 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise CrossmodalError(f"{path}: not UTF-8 text ({err.reason} at line {line}, byte {err.start}); "
                              f"save the CSV as UTF-8") from None


def check_separator(separator: str) -> str:
    """`data.separator` as a delimiter character, or 'auto'; a one-line error for anything else."""
    separator = SEPARATOR_ALIASES.get(separator, separator) if isinstance(separator, str) else separator
    if not isinstance(separator, str) or separator != "auto" and separator not in SEPARATORS:
        raise CrossmodalError(f"data.separator={printable(separator, 20)!r}: use auto, ',', ';', '\\t' or '|'")
    return separator


def _header_line(text: str, limit: int = 65536) -> str:
    """The first line (in the first `limit` characters) with a cell name in it; quoted line breaks stay inside."""
    quoted, start = False, 0
    for i, char in enumerate(text[:limit]):
        if char == '"':
            quoted = not quoted
        elif char in "\r\n" and not quoted:
            if text[start:i].strip(' "' + "".join(SEPARATORS)):
                return text[start:i]
            start = i + 1
    return text[start:limit]


def detect_separator(text: str) -> str:
    """The candidate separator found most often outside quotes in the header line; a comma when there is none."""
    counts = dict.fromkeys(SEPARATORS, 0)
    quoted = False
    for char in _header_line(text):
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(counts, key=counts.__getitem__)  # max keeps the first of equal counts: a comma wins ties
    return best if counts[best] else ","


def _parse(text: str, path: Path, separator: str) -> tuple[list[str] | None, list[list[str]], list[int]]:
    """(header, rows, the line each row starts on); blank lines and rows of empty cells skipped."""
    reader = csv_module.reader(io.StringIO(text, newline=""), delimiter=separator)
    header: list[str] | None = None
    rows, lines, end = [], [], 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if not "".join(record).strip():
                continue  # a blank line, or a row of empty cells as spreadsheets append
            if header is None:
                header = [cell.strip() for cell in record]
            else:
                rows.append(record)
                lines.append(start)
    except csv_module.Error as err:
        raise CrossmodalError(f"{path}: cannot parse as CSV at line {end + 1}: {printable(err)}") from None
    return header, rows, lines


def read_csv(path: str | Path, separator: str = "auto") -> pd.DataFrame:
    """Read a CSV as strings, indexed by the line each row starts on; a one-line error for every way it can be bad.

    `separator`: ',', ';', '\\t', '|' or 'auto' (detected from the header line; logged unless a comma). Blank lines
    and rows of empty cells are skipped; short rows are padded with ''; columns with a blank name are ignored. The
    csv module (not pandas) parses, because it reports where each row starts even when a quoted cell spans lines.
    """
    path = Path(path)
    separator = check_separator(separator)
    if not path.is_file():
        raise CrossmodalError(f"{path}: CSV file not found; check data.csv / data.train_csv / data.val_csv / data.test_csv")
    try:
        text = _decode(path, path.read_bytes())
    except OSError as err:
        raise CrossmodalError(f"{path}: cannot read the CSV file ({err.strerror}); check its permissions") from None
    if separator == "auto":
        separator = detect_separator(text)
        if separator != ",":
            log.info("%s: cells are separated by %s (detected from the header; set data.separator to choose)", path,
                     f"{SEPARATORS[separator]}s")
    header, rows, lines = _parse(text, path, separator)
    if header is None:
        raise CrossmodalError(f"{path}: the CSV file is empty; it needs a header row and at least one data row")
    if not rows:
        raise CrossmodalError(f"{path}: the CSV has a header but no data rows")
    refuse_repeated_columns(header, str(path), "header")
    width = len(header)
    long = [line for row, line in zip(rows, lines) if len(row) > width and any(c.strip() for c in row[width:])]
    if long:
        rows_at = describe_rows(pd.DataFrame({"line": long}))
        inside = "commas" if separator == "," else f"{SEPARATORS[separator]}s ({separator!r})"
        raise CrossmodalError(f"{path}: {rows_at} with more cells than the header's {width}; "
                              f"quote cells that contain {inside}")
    if any(len(row) != width for row in rows):
        rows = [row[:width] + [""] * (width - len(row)) for row in rows]
    columns = list(zip(*rows))
    return pd.DataFrame({name: list(columns[i]) for i, name in enumerate(header) if name},
                        index=pd.Index(lines, name="line"), dtype=object)


def resolve_paths(cells: Sequence[str], root: str) -> list[str]:
    """Each non-blank cell joined to `root` (an absolute cell stays as it is) and resolved: `..` and symlinks
    followed, so the result says where the file really is. Blank cells stay ''."""
    real_dirs: dict[str, str] = {}
    resolved = {"": ""}
    for cell in dict.fromkeys(cells):
        if cell in resolved:
            continue
        joined = os.path.join(root, cell)
        try:
            head, tail = os.path.split(joined)
            if tail in ("", ".", ".."):
                resolved[cell] = os.path.realpath(joined)
                continue
            if head not in real_dirs:  # folders are shared by many rows: resolve each once
                real_dirs[head] = os.path.realpath(head)
            full = os.path.join(real_dirs[head], tail)
            resolved[cell] = os.path.realpath(full) if os.path.islink(full) else full
        except ValueError:  # a NUL character or similar: kept (normalised) as written; the file check reports it
            resolved[cell] = os.path.normpath(joined)
    return [resolved[cell] for cell in cells]


def outside_root(path: str, root: str) -> bool:
    """True when the resolved `path` is not `root` or a path below it."""
    return os.path.commonpath([root, path]) != root
