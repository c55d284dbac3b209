"""Missing values at fitting time: which cells are missing, and the rows the policy keeps."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from softclass.data.messages import ROW_NUMBERING, cell_list, row_list
from softclass.errors import DataError

MISSING_POLICIES = ("error", "drop", "impute")


def dropped_rows_warning(dropped: pl.Series) -> str:
    return (
        f"dropped {dropped.len()} row(s) with missing values: {row_list(dropped.to_list())} "
        f"({ROW_NUMBERING})"
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


def complete_rows(
    columns: Mapping[str, pl.Series], labels: pl.Series, missing: str
) -> pl.Series | None:
    """Apply the missing policy at fit time: the rows to keep (None: all), or raise."""
    missing_targets = labels.is_null()
    if missing_targets.any() and missing != "drop":
        cells, total = missing_cells({labels.name: labels})
        raise DataError(
            f"missing class in the target column: {cell_list(cells, total)}; remove those rows "
            "or use --missing drop"
        )
    cells, total = missing_cells(columns)
    if cells and missing == "error":
        raise DataError(
            f"missing values: {cell_list(cells, total)}; fill them in, or use --missing drop to "
            "skip those rows or --missing impute to fill them with the training mean (numeric) "
            "or the most frequent category"
        )
    if missing != "drop" or not (cells or missing_targets.any()):
        return None
    incomplete = missing_targets
    for column in columns.values():
        incomplete = incomplete | column.is_null()
    return ~incomplete
