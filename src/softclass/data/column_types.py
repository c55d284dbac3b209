"""Column typing: what each column of a table holds, and how its cells are read.

Every column gets one :class:`ColumnType` of a kind in :data:`KINDS`:

* ``"number"`` — every present cell is a number. Besides plain numbers (``-2.5``, ``1e-3``,
  ``nan``, ``inf``) a text cell may carry a currency symbol or code before or after the number
  (``$72,000``, ``-$5``, ``12,50 €``, ``CHF 1'234.50``), thousands separators in groups of
  three (``,`` ``.`` space or apostrophe, never the decimal mark), a decimal comma (``1.234,56``,
  ``3,5``) and a percent sign (``45%`` is 0.45). Digits of any script are read (``５.１`` is
  5.1). The decimal mark of a column is ``.`` or ``,``: given by :class:`TypingOptions`
  (``--decimal``) or detected per column when only one reading fits every cell; when both fit
  and they give different values (``1,234``), ``.`` is used and :func:`infer_types` says so.
* ``"boolean"`` — every present cell is one of the pairs true/false, yes/no, t/f, y/n (any
  case); read as 1.0 and 0.0.
* ``"date"`` — every present cell is a date or date-time in one of
  :data:`softclass.data.dates.DATE_FORMATS` (the
  first format that reads every cell is used), or the column is a Parquet date/date-time.
* ``"text"`` — no present cell is a number: the cells are category names.

Missing cells are empty or blank cells and the markers :data:`MISSING_MARKERS` (plus
``TypingOptions.na_values``, ``--na-values``); they become nulls and do not count toward the
kind. A column where numbers and words mix is typed by this rule: with at most
:data:`MIXED_MAX_CATEGORIES` distinct values, or fewer than :data:`MIXED_NUMBER_SHARE` of its
present cells numbers, it is text (each value a category: ``K, 1, 2, …`` grades); otherwise it is
a number column whose words are read as missing, with a note counting them. ``--categorical
COL`` and ``--numeric COL`` (:class:`TypingOptions`) override the rule for a column (a column
declared numeric reads any word as missing). A column with no values at all is a number column
(all null). Parquet columns keep their type: integers, floats and decimals
are numbers, booleans booleans, dates and date-times dates; other types (lists, binary…) are an
error naming the column.

Everything is done with polars expressions over whole columns (no per-cell Python); plain
numbers take a single cast, decorated ones a regular-expression check and a rewrite.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

import polars as pl

from softclass.data.dates import date_format_of, parse_dates
from softclass.data.messages import clip, row_number
from softclass.data.number_text import (
    SAMPLE,
    all_match,
    decorated_values,
    matches,
    number_pattern,
)
from softclass.errors import DataError

MISSING_MARKERS = ("", "NA", "N/A", "null", "NULL", "?")
"""Cell texts (after stripping surrounding blanks) that mean "no value"."""

NUMBER, BOOLEAN, DATE, TEXT = "number", "boolean", "date", "text"
KINDS = (NUMBER, BOOLEAN, DATE, TEXT)
"""The kinds of column, in the order of the module docstring."""

DECIMAL_MARKS = (".", ",")
"""Accepted decimal marks (``--decimal``)."""

BOOLEAN_PAIRS = (("true", "false"), ("yes", "no"), ("t", "f"), ("y", "n"))
"""Texts (compared lower-case) a boolean column may hold: (true text, false text)."""

MIXED_MAX_CATEGORIES = 20
"""A column mixing numbers and words with at most this many distinct values is text."""
MIXED_NUMBER_SHARE = 0.8
"""A column mixing numbers and words, with more distinct values, is a number column (its words
read as missing) when at least this share of its present cells are numbers; else text."""

FLOAT32_MAX = 3.4028234663852886e38
"""The largest finite float32: features are float32, so larger magnitudes cannot be used."""

_GROUPED_THOUSANDS = re.compile(r"^[+-]?[1-9][0-9]{0,2}\.[0-9]{3}$")


@dataclass(frozen=True)
class TypingOptions:
    """How text cells are read (``--decimal``, ``--na-values``).

    Attributes:
        decimal: ``"."`` or ``","`` for every number column, or None to detect per column.
        na_values: extra cell texts meaning "missing", besides :data:`MISSING_MARKERS`.
        categorical: columns read as text, each value a category (``--categorical``).
        numeric: columns read as numbers, any other cell text missing (``--numeric``).
    """

    decimal: str | None = None
    na_values: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        both = sorted(set(self.categorical) & set(self.numeric))
        if both:
            raise DataError(
                f"--categorical and --numeric both name {clip(repr(both[0]))}; give one of them"
            )
        if self.decimal is not None and self.decimal not in DECIMAL_MARKS:
            raise DataError(
                f"--decimal {self.decimal!r} is not a decimal mark; expected '.' or ','"
            )

    @property
    def missing_markers(self) -> tuple[str, ...]:
        """Every cell text read as missing."""
        return (*MISSING_MARKERS, *(value.strip() for value in self.na_values))


@dataclass(frozen=True)
class ColumnType:
    """What a column holds and how its text cells are read.

    Attributes:
        name: the column name.
        kind: one of :data:`KINDS`.
        decimal: the decimal mark of a number column's text cells.
        date_format: the format of a date column's text cells (None: typed cells or no text).
        boolean_texts: (true, false) texts of a boolean column's text cells.
        words_as_missing: a number column whose cells that are not numbers are missing (a
            mixed column typed as numbers, or ``--numeric``).
        note: what the user should know about the typing (an ambiguous decimal mark…), or "".
    """

    name: str
    kind: str
    decimal: str = "."
    date_format: str | None = None
    boolean_texts: tuple[str, str] = ("true", "false")
    words_as_missing: bool = False
    note: str = field(default="", compare=False)

    @property
    def dtype(self) -> pl.DataType:
        """The polars type of the typed column."""
        return {NUMBER: pl.Float64, BOOLEAN: pl.Boolean, DATE: pl.Datetime, TEXT: pl.String}[
            self.kind
        ]()


@dataclass(frozen=True)
class BadCells:
    """Cells that could not be read by their column's type: 0-based rows, column, text."""

    rows: pl.Series
    column: str
    texts: pl.Series
    problem: str

    def message(self, source: str) -> str:
        """One line naming the first cell and how many more there are."""
        more = f" (and {self.rows.len() - 1} more in this column)" if self.rows.len() > 1 else ""
        return (
            f"{source}: row {row_number(int(self.rows[0]))}, column {self.column!r}: "
            f"{clip(repr(self.texts[0]))} {self.problem}{more}"
        )


def type_columns(
    table: pl.DataFrame, source: str = "the table", options: TypingOptions | None = None
) -> pl.DataFrame:
    """Return ``table`` with each column typed: Float64, Boolean, Datetime or String.

    Args:
        table: any polars DataFrame; text columns are typed by the module's rule.
        source: where the table came from (a file name), used in error messages.
        options: decimal mark and extra missing markers.

    Returns:
        A DataFrame with the same column names and rows; missing cells are null.

    Raises:
        DataError: a column mixes numbers and text, or has a type softclass cannot use.
    """
    return pl.DataFrame(
        [type_column(table.get_column(name), source, options)[1] for name in table.columns]
    )


def infer_types(
    table: pl.DataFrame, source: str = "the table", options: TypingOptions | None = None
) -> tuple[ColumnType, ...]:
    """The :class:`ColumnType` of every column of ``table``, in table order.

    Raises:
        DataError: a column mixes numbers and text, or has a type softclass cannot use.
    """
    options = options or TypingOptions()
    return tuple(
        infer_column_type(table.get_column(name), source, options) for name in table.columns
    )


def infer_column_type(
    column: pl.Series, source: str = "the table", options: TypingOptions | None = None
) -> ColumnType:
    """The :class:`ColumnType` of one column (see the module docstring for the rule)."""
    return type_column(column, source, options)[0]


def type_column(
    column: pl.Series, source: str = "the table", options: TypingOptions | None = None
) -> tuple[ColumnType, pl.Series]:
    """Infer a column's type and read it by that type in one go (each cell parsed once).

    Returns:
        ``(column type, typed column)``, the typed column as :func:`read_column` gives it.

    Raises:
        DataError: the column mixes numbers and text, or has a type softclass cannot use.
    """
    options = options or TypingOptions()
    dtype = column.dtype
    name = column.name
    if name in options.categorical:
        column_type = ColumnType(name, TEXT, note="text (--categorical)")
        return column_type, read_column(column, column_type, options.missing_markers)[0]
    if name in options.numeric and dtype in (pl.String, pl.Categorical):
        text = present_text(column.cast(pl.String), options.missing_markers)
        return _numbers_and_words(text, options.decimal, "--numeric")
    if dtype.is_numeric() or dtype == pl.Null:
        return ColumnType(name, NUMBER), column.cast(pl.Float64)
    if dtype == pl.Boolean:
        return ColumnType(name, BOOLEAN), column
    if dtype.is_temporal() and dtype != pl.Time and dtype != pl.Duration:
        return ColumnType(name, DATE), column.cast(pl.Datetime("us"))
    if dtype not in (pl.String, pl.Categorical) and not isinstance(dtype, pl.Enum):
        raise DataError(
            f"{source}: column {name!r} has type {dtype}, which softclass cannot use; "
            "expected numbers, booleans, dates or text"
        )
    plain = _plain_numbers(column, options.decimal, options.missing_markers)
    if plain is not None:
        markers = options.missing_markers if plain.null_count() > column.null_count() else None
        return ColumnType(name, NUMBER, note=_three_decimals_note(column, plain, markers)), plain
    text = present_text(column, options.missing_markers)
    if text.null_count() == text.len():
        return ColumnType(name, NUMBER), text.cast(pl.Float64)
    number = _number_type(text, options.decimal)
    if number is not None:
        decimal, note, values = number
        return ColumnType(name, NUMBER, decimal=decimal, note=note), values.alias(name)
    distinct = text.drop_nulls().unique()
    lowered = set(distinct.str.to_lowercase().to_list()) if distinct.len() <= 2 else set()
    for pair in BOOLEAN_PAIRS:
        if lowered and lowered <= set(pair):
            column_type = ColumnType(name, BOOLEAN, boolean_texts=pair)
            return column_type, _read_present_text(text, column_type)[0]
    date_format = date_format_of(distinct)
    if date_format is not None:
        column_type = ColumnType(name, DATE, date_format=date_format)
        return column_type, _read_present_text(text, column_type)[0]
    return _mixed_type(text, distinct, options.decimal, source)


def read_column(
    column: pl.Series, column_type: ColumnType, missing_markers: Sequence[str] = MISSING_MARKERS
) -> tuple[pl.Series, BadCells | None]:
    """Read one column by its type: the typed column (unreadable cells null) and the bad cells.

    Returns:
        ``(typed, bad)``: ``typed`` has the dtype of ``column_type``; ``bad`` is None when every
        present cell was read, else the cells that were not (they are null in ``typed``).
    """
    kind = column_type.kind
    dtype = column.dtype
    if kind == TEXT:
        if dtype == pl.String:
            return present_text(column, missing_markers), None
        return present_text(column.cast(pl.String), missing_markers), None
    if kind == NUMBER and (dtype.is_numeric() or dtype == pl.Null):
        return column.cast(pl.Float64), None
    if kind == BOOLEAN and dtype == pl.Boolean:
        return column, None
    if kind == DATE and dtype.is_temporal():
        return column.cast(pl.Datetime("us")), None
    if kind == NUMBER and column_type.decimal == "." and dtype == pl.String:
        plain = _plain_numbers(column, ".", tuple(missing_markers))
        if plain is not None:
            return plain, None
    if dtype.is_numeric() and kind == BOOLEAN:
        text = column.cast(pl.String)
    elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        text = present_text(column.cast(pl.String), missing_markers)
    else:
        text = None
    if text is None:
        typed = pl.Series(column.name, [None] * column.len(), dtype=column_type.dtype)
        bad_rows = column.is_not_null()
        problem = f"has type {dtype}, not the {kind} the model was trained on"
        return typed, BadCells(
            bad_rows.arg_true(), column.name, column.cast(pl.String).filter(bad_rows), problem
        )
    return _read_present_text(text, column_type)


def _read_present_text(
    text: pl.Series, column_type: ColumnType
) -> tuple[pl.Series, BadCells | None]:
    """Read a stripped text column (missing cells null) by a number, boolean or date type."""
    kind = column_type.kind
    if kind == NUMBER:
        typed = parse_number_text(text, column_type.decimal)
        problem = "is not a number"
    elif kind == BOOLEAN:
        lowered = text.str.to_lowercase()
        true_text, false_text = column_type.boolean_texts
        typed = (
            pl.when(lowered == true_text)
            .then(True)
            .when(lowered == false_text)
            .then(False)
            .otherwise(None)
        )
        typed = pl.select(typed.alias(text.name)).to_series()
        problem = f"is not {true_text!r} or {false_text!r}"
    else:
        typed = parse_dates(text, column_type.date_format)
        problem = f"is not a date in the format {column_type.date_format}"
    bad_rows = text.is_not_null() & typed.is_null()
    if not bad_rows.any() or column_type.words_as_missing:
        return typed.alias(text.name), None
    return typed.alias(text.name), BadCells(
        bad_rows.arg_true(), text.name, text.filter(bad_rows), problem
    )


def present_text(column: pl.Series, missing_markers: Sequence[str] = MISSING_MARKERS) -> pl.Series:
    """A text column with surrounding blanks stripped and missing markers turned to null."""
    stripped = column.cast(pl.String).str.strip_chars()
    is_missing = stripped.is_in(list(missing_markers))
    if not is_missing.any():
        return stripped
    return stripped.zip_with(~is_missing, pl.Series([None], dtype=pl.String))


def parse_number_text(text: pl.Series, decimal: str = ".") -> pl.Series:
    """Numbers of a stripped text column (null: missing or not a number) as ``Float64``."""
    if decimal == ".":
        plain = text.cast(pl.Float64, strict=False)
        failed = text.is_not_null() & plain.is_null()
        if not failed.any():
            return plain
        return plain.zip_with(~failed, decorated_values(text, decimal))
    return decorated_values(text, decimal)


# -- numbers -----------------------------------------------------------------------------------


def _plain_numbers(
    column: pl.Series, decimal: str | None, missing_markers: tuple[str, ...]
) -> pl.Series | None:
    """The values of a text column whose every cell is a plain number or a missing marker
    (null), else None.

    The fast path of typing: one cast, no stripping, no regular expression (only the cells the
    cast leaves null are checked for markers: a plain number has no surrounding blanks). Not
    taken when a missing marker is itself a number (``--na-values -999``) or the decimal mark
    is ``,``.
    """
    if decimal == "," or _has_number_marker(missing_markers):
        return None
    text = column if column.dtype == pl.String else column.cast(pl.String)
    for cells in (text.head(SAMPLE), text):  # a text column fails in its first cells
        values = cells.cast(pl.Float64, strict=False)
        if values.null_count() != cells.null_count():
            failed = cells.filter(values.is_null() & cells.is_not_null())
            if present_text(failed, missing_markers).null_count() != failed.len():
                return None
    if values.null_count() == values.len():
        return None
    return values.alias(column.name)


@cache
def _has_number_marker(markers: tuple[str, ...]) -> bool:
    """Whether a missing marker is itself a number (``-999``)."""
    for marker in markers:
        try:
            float(marker)
        except ValueError:
            continue
        return True
    return False


def _three_decimals_note(
    text: pl.Series, values: pl.Series, markers: Sequence[str] | None = None
) -> str:
    """A note when every plain number could also be thousands written with '.' (``1.234``).
    ``markers``: read ``text`` as :func:`present_text` with them gives it."""
    head = text.head(8) if markers is None else present_text(text.head(8), markers)
    first = [cell for cell in head.to_list() if cell is not None]
    if not all(_GROUPED_THOUSANDS.match(cell.strip()) for cell in first):
        return ""  # decided by the first cells, without a polars call per column
    text = text if markers is None else present_text(text, markers)
    for cells, numbers in ((text.head(SAMPLE), values.head(SAMPLE)), (text, values)):
        text_cells = cells.cast(pl.String)
        magnitude = numbers.abs()
        looks_grouped = (
            (text_cells.str.find(".", literal=True) == text_cells.str.len_bytes() - 4)
            & (magnitude >= 1)
            & (magnitude < 1000)
            & ~text_cells.str.contains("e", literal=True)
            & ~text_cells.str.contains("E", literal=True)
        )
        if not looks_grouped.all():  # missing cells (null) do not count
            return ""
    position = int(values.is_not_null().arg_true()[0])
    example = text.cast(pl.String)[position]
    return (
        f"{clip(repr(example))} is read as {values[position]:g}; pass --decimal , if ',' is "
        "the decimal mark"
    )


def _number_type(text: pl.Series, decimal: str | None) -> tuple[str, str, pl.Series] | None:
    """``(decimal mark, note, values)`` when every present cell of ``text`` is a number."""
    if decimal is not None:
        if not all_match(text, decimal, present=True):
            return None
        return decimal, "", parse_number_text(text, decimal)
    if _has_a_word(text.head(SAMPLE)):
        return None  # a text column: not every cell cast and matched (-1M cells)
    plain = text.cast(pl.Float64, strict=False)
    failed = text.is_not_null() & plain.is_null()
    if not failed.any():
        return ".", _three_decimals_note(text, plain), plain
    every = plain.null_count() == plain.len()  # no plain number: the failed cells are present
    failed_text = text if every else text.filter(failed)
    if all_match(failed_text, ".", present=every):
        if every:  # no copy of the failed cells to scatter (null where ``text`` is); one
            values = decorated_values(text, ".", True).rechunk()  # chunk, as scatter's
        else:
            values = plain.scatter(failed.arg_true(), decorated_values(failed_text, ".", True))
        note = _ambiguity_note(text.drop_nulls()) if all_match(text, ",", present=True) else ""
        return ".", note, values
    if all_match(text, ",", present=True):
        return ",", "", decorated_values(text, ",", True)
    return None


def _has_a_word(cells: pl.Series) -> bool:
    """Whether an ASCII cell of ``cells`` is no number with either mark: then no number type
    fits whatever other cells hold (a non-ASCII cell may, beside a digit of another script)."""
    cells = cells.drop_nulls()
    cells = cells.filter(cells.cast(pl.Float64, strict=False).is_null())
    cells = cells.filter(cells.str.len_bytes() == cells.str.len_chars())
    point, comma = (cells.str.contains(number_pattern(mark)) for mark in DECIMAL_MARKS)
    return bool((~point & ~comma).any())


def _ambiguity_note(present: pl.Series) -> str:
    """A note when reading ``present`` with ',' as decimal mark would give other values."""
    differ = parse_number_text(present, ".") != parse_number_text(present, ",")
    if not differ.any():
        return ""
    example = present.filter(differ)[0]
    value = parse_number_text(pl.Series([example]), ".")[0]
    return (
        f"{clip(repr(example))} is read as {value:g}; pass --decimal , if ',' is the decimal mark"
    )


def _number_cells(text: pl.Series, decimal: str | None) -> pl.Series:
    """Boolean per cell: a number (with ``decimal``, or either mark when None)."""
    marks = DECIMAL_MARKS if decimal is None else (decimal,)
    is_number = matches(text, marks[0])
    for mark in marks[1:]:
        is_number = is_number | matches(text, mark)
    return is_number


def _mixed_type(
    text: pl.Series, distinct: pl.Series, decimal: str | None, source: str
) -> tuple[ColumnType, pl.Series]:
    """Type a text column that is not all numbers by the mixed-column rule (module docstring).

    Raises:
        DataError: every cell is a number but with both decimal marks.
    """
    is_number = _number_cells(distinct, decimal)
    if not is_number.any():
        return ColumnType(text.name, TEXT), text
    number_cells = text.is_in(distinct.filter(is_number).to_list()).fill_null(False)
    present = text.is_not_null()
    n_present = int(present.sum())
    n_numbers = int(number_cells.sum())
    if n_numbers == n_present:
        point = matches(text, ".")
        index = int((present & ~point).arg_true()[0])
        raise DataError(
            f"{source}: column {text.name!r} writes numbers with '.' as decimal mark "
            f"({clip(repr(text.filter(point)[0]))}) and with ',' ({clip(repr(text[index]))}, row "
            f"{row_number(index)}); pass --decimal . or --decimal , to say which it is"
        )
    if distinct.len() <= MIXED_MAX_CATEGORIES or n_numbers < MIXED_NUMBER_SHARE * n_present:
        note = (
            f"mixes numbers and words ({_examples(distinct.filter(~is_number))}): read as text, "
            f"{distinct.len()} categories (--numeric COL reads the words as missing)"
        )
        return ColumnType(text.name, TEXT, note=note), text
    return _numbers_and_words(text, decimal, "")


def _numbers_and_words(
    text: pl.Series, decimal: str | None, reason: str
) -> tuple[ColumnType, pl.Series]:
    """A number column read from stripped text cells, every cell that is not a number missing;
    its note counts those cells (``reason``: the flag that asked for it, or "")."""
    is_number = _number_cells(text, decimal)
    numbers = text.zip_with(is_number, pl.Series([None] * text.len(), dtype=pl.String))
    found = _number_type(numbers, decimal)
    mark, values = (found[0], found[2]) if found else (".", parse_number_text(numbers, "."))
    is_word = text.is_not_null() & values.is_null()
    n_words = int(is_word.sum())
    words = text.filter(is_word).unique()
    note = f"{n_words} cell(s) with words ({_examples(words)}) read as missing" if n_words else ""
    if reason:
        note = f"number ({reason}){'; ' * bool(note)}{note}"
    column_type = ColumnType(text.name, NUMBER, decimal=mark, words_as_missing=True, note=note)
    return column_type, values.alias(text.name)


def _examples(words: pl.Series) -> str:
    """Up to three of ``words``, quoted, sorted; "…" when there are more."""
    shown = ", ".join(clip(repr(word)) for word in words.sort().head(3).to_list())
    return shown + (" …" if words.len() > 3 else "")
