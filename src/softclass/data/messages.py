"""How data errors point at places: row numbers, column lists and "did you mean" hints.

Row numbers in every message count the header as row 1, so the first data row is row 2 — the row
a spreadsheet shows and, for a CSV file without blank lines or line breaks inside quoted values,
the line number a text editor shows. Parquet tables use the same numbering.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

HEADER_ROWS = 1
"""Rows above the first data row in a table file (the header)."""

SHOWN_CELLS = 5
"""How many offending cells a message lists before summarizing the rest as "and N more"."""


def row_number(index: int) -> int:
    """The row a user sees for the 0-based data-row ``index`` (header = row 1)."""
    return index + HEADER_ROWS + 1


def quoted_names(names: Iterable[str]) -> str:
    """``'a', 'b', 'c'`` — names as they appear in messages."""
    return ", ".join(repr(name) for name in names)


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'income'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    if not close:
        lowered = {choice.lower(): choice for choice in choices}
        if name.lower() in lowered:
            close = [lowered[name.lower()]]
    return f" (did you mean {close[0]!r}?)" if close else ""


def cell_list(cells: Sequence[tuple[int, str]], total: int | None = None) -> str:
    """``row 4, column 'age'; row 9, column 'income' (and 3 more)`` for 0-based row indices."""
    shown = "; ".join(
        f"row {row_number(index)}, column {column!r}" for index, column in cells[:SHOWN_CELLS]
    )
    remaining = (len(cells) if total is None else total) - min(len(cells), SHOWN_CELLS)
    return shown + (f" (and {remaining} more)" if remaining > 0 else "")
