"""Missing values: the policies, and which training rows each keeps.

* **Missing feature values** follow ``missing``: ``"impute"`` (the default) fills a number with
  the training median and adds a 0/1 indicator output ``col.missing`` for each column that had
  missing cells in training; a text column with missing cells gets the category
  :data:`MISSING_CATEGORY` (a column without them in training fills a later missing cell with
  its most frequent category). ``"drop"`` fits on complete rows and
  :meth:`~softclass.data.Recipe.prepare` drops incomplete rows later (reporting them);
  ``"error"`` refuses them, naming the first rows and columns.
* **A missing target** (no class) leaves that row out of training and evaluation, with one
  warning giving the count, under every policy; only a table with no labelled row is refused.

Recipes saved before version 3 imputed numbers with the training mean and text with the most
frequent category, without indicators; their fill values are stored, so they still predict the
same.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import polars as pl

from softclass.data.column_types import ColumnType
from softclass.data.messages import ROW_NUMBERING, cell_list, clip, quoted_names, row_list
from softclass.errors import DataError

MISSING_POLICIES = ("error", "drop", "impute")
MISSING_CATEGORY = "(missing)"
"""The category a missing text cell becomes under "impute" (when training had missing cells)."""
INDICATOR_PART = "missing"
"""The ``part`` of a numeric feature that is 1 where its column's cell is missing, else 0."""


def dropped_rows_warning(dropped: pl.Series) -> str:
    return (
        f"dropped {dropped.len()} row(s) with missing values: {row_list(dropped.to_list())} "
        f"({ROW_NUMBERING})"
    )


def unlabelled_warning(unlabelled: pl.Series, target: str) -> str:
    """One line for the rows (0-based indices) without a class, left out."""
    return (
        f"left out {unlabelled.len()} row(s) with no class in the target column "
        f"{clip(repr(target))}: {row_list(unlabelled.to_list())} ({ROW_NUMBERING})"
    )


def check_labelled(labels: pl.Series) -> None:
    """Refuse a target column without a single class."""
    if labels.null_count() == labels.len():
        raise DataError(
            f"no row has a class: every cell of the target column {clip(repr(labels.name))} "
            "is missing (--target COL chooses the class column)"
        )


def missing_cells(columns: Mapping[str, pl.Series]) -> tuple[list[tuple[int, str]], int]:
    """The first missing cells in row-major order, and how many there are in all."""
    cells: list[tuple[int, int, str]] = []
    total = 0
    for position, (name, column) in enumerate(columns.items()):
        n_missing = column.null_count()
        if not n_missing:
            continue
        total += n_missing
        cells.extend((int(index), position, name) for index in column.is_null().arg_true().head(5))
    cells.sort()
    return [(index, name) for index, _, name in cells], total


class _Filtered(Mapping[str, pl.Series]):
    """``columns`` at the rows where ``mask`` is True, each filtered when read (none kept)."""

    def __init__(self, columns: Mapping[str, pl.Series], mask: pl.Series) -> None:
        self._columns, self._mask = columns, mask

    def __getitem__(self, name: str) -> pl.Series:
        return self._columns[name].filter(self._mask)

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


def complete_rows(
    columns: Mapping[str, pl.Series], labelled: pl.Series, missing: str
) -> pl.Series | None:
    """Apply the missing policy at fit time: the rows to keep (None: all), or raise.

    ``labelled`` is True where the row has a class; the others are never kept.

    Raises:
        DataError: missing feature values under "error".
    """
    cells, total = missing_cells(_Filtered(columns, labelled)) if missing == "error" else ([], 0)
    if cells:
        cells = [(int(labelled.arg_true()[index]), name) for index, name in cells]
        raise DataError(
            f"missing values: {cell_list(cells, total)}; fill them in, or use --missing impute "
            "(median and a missing indicator for numbers, a '(missing)' category for text) or "
            "--missing drop to skip those rows"
        )
    keep = labelled
    if missing == "drop":
        for column in columns.values():
            keep = keep & column.is_not_null()
    return None if keep.all() else keep


def fit_notes(
    target_column: pl.Series,
    labels: pl.Series,
    kept: pl.Series | None,
    types: Mapping[str, ColumnType],
    left_out: Mapping[str, str],
) -> list[str]:
    """What fitting tells the user: rows without a class, rows dropped (``kept``: the rows the
    fit kept; None: all), column notes, columns left out."""
    notes = []
    unlabelled = target_column.is_null()
    if unlabelled.any():
        notes.append(unlabelled_warning(unlabelled.arg_true(), target_column.name))
    if kept is not None and (kept.len() - kept.sum()) > unlabelled.sum():
        notes.append(dropped_rows_warning((~kept & ~unlabelled).arg_true()))
    for name, column_type in types.items():
        if column_type.note:
            notes.append(f"column {clip(repr(name))}: {column_type.note}")
    id_like = [name for name, reason in left_out.items() if reason.startswith("ID-like")]
    if id_like:
        notes.append(
            f"dropped ID-like column(s) {quoted_names(id_like)} (row numbers or identifiers); "
            "pass --keep COL to use one as a feature"
        )
    empty = [name for name in left_out if name not in id_like]
    if empty:
        notes.append(f"dropped column(s) {quoted_names(empty)}: every cell is missing")
    return notes
