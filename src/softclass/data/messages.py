"""How data errors point at places: row numbers, column lists and "did you mean" hints.

Row numbers in every message — and in the ``row`` column of predictions — count the header as
row 1, so the first data row is row 2: the row a spreadsheet shows and, for a CSV file without
blank lines or line breaks inside quoted values, the line number a text editor shows. Parquet
tables and tables built in code use the same numbering (as if they had a header).

Messages are one line of at most about :data:`MESSAGE_LIMIT` characters: lists are cut after a
few items with "… and N more", and long values are clipped.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

HEADER_ROWS = 1
"""Rows above the first data row in a table file (the header)."""

SHOWN_CELLS = 5
"""How many offending cells a message lists before summarizing the rest as "and N more"."""

SHOWN_NAMES = 8
"""How many names (columns, categories, classes) a message lists before "… and N more"."""

MESSAGE_LIMIT = 300
"""The longest a message should be, in characters."""

VALUE_LIMIT = 40
"""The longest a quoted value is shown in a message, in characters."""

ROW_NUMBERING = "rows counted as in the file: header = row 1"
"""The phrase that tells how rows are numbered, for reports that list many rows."""


def row_number(index: int) -> int:
    """The row a user sees for the 0-based data-row ``index`` (header = row 1)."""
    return index + HEADER_ROWS + 1


def clip(text: str, limit: int = VALUE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, ending with "…" when it was longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quoted_names(names: Iterable[object], limit: int = SHOWN_NAMES) -> str:
    """``'a', 'b', 'c'`` — names as they appear in messages, cut with "… and N more"."""
    names = list(names)
    shown = ", ".join(clip(repr(name)) for name in names[:limit])
    return shown + (f" … and {len(names) - limit} more" if len(names) > limit else "")


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'income'?)`` for the closest of ``choices``, or an empty string."""
    if len(choices) > 1000:
        lowered = {choice.lower(): choice for choice in choices}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    else:
        close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    if not close:
        lowered = {choice.lower(): choice for choice in choices}
        if name.lower() in lowered:
            close = [lowered[name.lower()]]
    return f" (did you mean {close[0]!r}?)" if close else ""


def cell_list(cells: Sequence[tuple[int, str]], total: int | None = None) -> str:
    """``row 4, column 'age'; row 9, column 'income' (and 3 more)`` for 0-based row indices."""
    shown = "; ".join(
        f"row {row_number(index)}, column {clip(repr(column))}"
        for index, column in cells[:SHOWN_CELLS]
    )
    remaining = (len(cells) if total is None else total) - min(len(cells), SHOWN_CELLS)
    return shown + (f" (and {remaining} more)" if remaining > 0 else "")


def row_list(indices: Sequence[int], limit: int = 10) -> str:
    """``rows 2, 5, 9 … and 4 more`` for 0-based data-row indices."""
    indices = list(indices)
    shown = ", ".join(str(row_number(index)) for index in indices[:limit])
    more = f" … and {len(indices) - limit} more" if len(indices) > limit else ""
    return f"row{'s' if len(indices) > 1 else ''} {shown}{more}"
