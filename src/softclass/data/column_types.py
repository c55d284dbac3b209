"""Column typing: every column of a table is either numeric or categorical.

The rule, applied to each column after reading:

* Missing cells are empty (or blank) cells and the markers ``NA``, ``N/A``, ``null``, ``NULL``
  and ``?``; they become nulls and do not count toward the column's kind.
* A text cell is a number when it is a decimal number with an optional sign, an optional
  currency sign (``$``, ``€``, ``£``, before or after the sign), optional thousands separators
  (commas in groups of three), an optional fraction and exponent — ``$72,000``, ``$72000``,
  ``1,234.5``, ``-$5``, ``1e-3`` — or ``nan``/``inf``/``infinity`` with an optional sign (kept as
  non-finite floats, which the recipe later rejects by row and column).
* A column is **numeric** (``Float64``) when every non-missing cell is a number, and
  **categorical** (``String``) when no non-missing cell is. A column holding both is an error that
  names the first cell of the minority kind: ``row 17, column 'income': 'abc' is not a number``.
  A column with no values at all is numeric (all null).
* Columns already typed (Parquet, or a DataFrame built in code): integers, floats and decimals are
  numeric; booleans become the categories ``"true"``/``"false"``; other types (dates, lists,
  binary …) are an error naming the column.
"""

from __future__ import annotations

import polars as pl

from softclass.data.messages import row_number
from softclass.errors import DataError

MISSING_MARKERS = ("", "NA", "N/A", "null", "NULL", "?")
"""Cell texts (after stripping surrounding blanks) that mean "no value"."""

_CURRENCY = "[$€£]"
_INTEGER_PART = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_MANTISSA = rf"(?:{_INTEGER_PART}(?:\.\d*)?|\.\d+)"
_FINITE_NUMBER = rf"^(?:[+-]?{_CURRENCY}?|{_CURRENCY}[+-]?){_MANTISSA}(?:[eE][+-]?\d+)?$"
_NON_FINITE_NUMBER = r"(?i)^[+-]?(?:nan|inf|infinity)$"
_DECORATION = rf"{_CURRENCY}|,"

NUMERIC = "numeric"
CATEGORICAL = "categorical"


def type_columns(table: pl.DataFrame, source: str = "the table") -> pl.DataFrame:
    """Return ``table`` with each column typed numeric (``Float64``) or categorical (``String``).

    Args:
        table: any polars DataFrame; text columns are parsed by the rule in the module docstring.
        source: where the table came from (a file name), used in error messages.

    Returns:
        A DataFrame with the same column names and rows; missing cells are null.

    Raises:
        DataError: a column mixes numbers and text, or has a type softclass cannot use.
    """
    return table.with_columns(
        [typed_column(table.get_column(name), source) for name in table.columns]
    )


def column_kind(column: pl.Series) -> str:
    """``"numeric"`` or ``"categorical"`` for a column returned by :func:`type_columns`."""
    return NUMERIC if column.dtype.is_numeric() else CATEGORICAL


def typed_column(column: pl.Series, source: str = "the table") -> pl.Series:
    """One column typed by the module's rule: a ``Float64`` or a ``String`` series."""
    dtype = column.dtype
    if dtype.is_numeric():
        return column.cast(pl.Float64)
    if dtype == pl.Null:
        return column.cast(pl.Float64)
    if dtype == pl.Boolean:
        return column.cast(pl.String)
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return _typed_text_column(column.cast(pl.String), source)
    raise DataError(
        f"{source}: column {column.name!r} has type {dtype}, which softclass cannot use; "
        "expected numbers or text"
    )


def parse_numbers(column: pl.Series, source: str = "the table") -> pl.Series:
    """Parse a text column that must hold numbers (missing cells become null) into ``Float64``.

    Raises:
        DataError: naming the first cell that is not a number, its row and column.
    """
    text = _with_missing_as_null(column.cast(pl.String))
    is_number = _is_number(text)
    not_number = text.is_not_null() & ~is_number
    if not_number.any():
        index = int(not_number.arg_true()[0])
        raise DataError(
            f"{source}: row {row_number(index)}, column {column.name!r}: "
            f"{text[index]!r} is not a number"
        )
    return _number_values(text)


def parse_categories(column: pl.Series) -> pl.Series:
    """A column as category texts: stripped ``String`` values, missing markers turned to null."""
    return _with_missing_as_null(column.cast(pl.String))


def _typed_text_column(column: pl.Series, source: str) -> pl.Series:
    text = _with_missing_as_null(column)
    is_number = _is_number(text)
    present = text.is_not_null()
    n_present = int(present.sum())
    n_numbers = int((present & is_number).sum())
    if n_numbers == n_present:
        return _number_values(text)
    if n_numbers == 0:
        return text
    if n_numbers * 2 >= n_present:
        index = int((present & ~is_number).arg_true()[0])
        problem = "is not a number (the column's other values are numbers)"
    else:
        index = int((present & is_number).arg_true()[0])
        problem = "is a number but the column's other values are text"
    raise DataError(
        f"{source}: row {row_number(index)}, column {column.name!r}: {text[index]!r} {problem}; "
        "a column must hold only numbers or only text (leave a cell empty for a missing value)"
    )


def _with_missing_as_null(text: pl.Series) -> pl.Series:
    stripped = text.str.strip_chars()
    return stripped.zip_with(~stripped.is_in(MISSING_MARKERS), pl.Series([None], dtype=pl.String))


def _is_number(text: pl.Series) -> pl.Series:
    return (text.str.contains(_FINITE_NUMBER) | text.str.contains(_NON_FINITE_NUMBER)).fill_null(
        False
    )


def _number_values(text: pl.Series) -> pl.Series:
    return text.str.replace_all(_DECORATION, "").cast(pl.Float64, strict=False)
