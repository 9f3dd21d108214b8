"""The baseline switch data.tabular.as_text=true: the tabular columns written into the text instead of encoded.

A row's columns become "price: 12.5; brand: acme" (the header, a colon, the cell as written; cells joined by
"; "; blank cells left out, so a row without values gives ""). Line breaks in a cell become spaces: one row, one
line of text.

Where it goes (`with_tabular_text`): *before* an existing text, joined by " | " ("price: 12.5; brand: acme |
a red chair"). Before, not after, because a tokenizer truncates at data.text.max_length from the end: the short
structured part is never the one cut off. A blank text becomes the tabular text alone, and without a text column
(`texts=None`) the tabular text is the text column: the caller then adds the text modality. A row whose text and
tabular cells are all blank stays "" (a missing text, as before).
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from crossmodal_cli.data.tabular_columns import cell_text, column_texts

CELL_SEPARATOR = "; "
TEXT_SEPARATOR = " | "


def tabular_texts(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Each row's `columns` as "column: cell; column: cell" ([N] strings), blank cells left out."""
    cells = {c: [" ".join(t.split()) for t in column_texts(frame, c)] for c in columns}
    return [CELL_SEPARATOR.join(f"{c}: {cells[c][i]}" for c in columns if cells[c][i]) for i in range(len(frame))]


def with_tabular_text(texts: Sequence[str] | None, tabular: Sequence[str]) -> list[str]:
    """The text column with each row's tabular text put before it (module docstring); `texts=None`: there is no
    text column, the tabular texts are the texts."""
    if texts is None:
        return list(tabular)
    return [TEXT_SEPARATOR.join(part for part in (t, cell_text(text)) if part)
            for t, text in zip(tabular, texts, strict=True)]
