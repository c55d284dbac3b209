"""Reading CSV and Parquet files into typed polars DataFrames, with errors a user can act on.

CSV files are parsed by pyarrow (every cell read as text, then typed by
:mod:`softclass.data.column_types`); Parquet files by pyarrow's Parquet reader. Every problem is
a :class:`~softclass.errors.DataError` whose message starts with the file name and, where there is
one, names the row (header = row 1, see :mod:`softclass.data.messages`) and the column.
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pa_parquet

from softclass.data.column_types import type_columns
from softclass.data.messages import quoted_names
from softclass.errors import DataError

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
"""File name endings read_table understands (case-insensitive) and the format each means."""


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a ``.csv`` or ``.parquet``/``.pq`` file into a typed DataFrame.

    A CSV file must be UTF-8 (a byte-order mark is allowed), comma-separated, with a header row
    naming every column and the same number of fields on every row; blank lines are skipped and
    values may be quoted (``"$72,000"``). Surrounding blanks of names and values are ignored.

    Returns:
        A DataFrame with one ``Float64`` (numeric) or ``String`` (categorical) column per header
        name, typed by :func:`softclass.data.column_types.type_columns`; missing cells are null.

    Raises:
        DataError: the file is missing, empty, has no data rows, is not UTF-8, has a row with
            more or fewer fields than the header, has empty or repeated column names, mixes
            numbers and text in a column, or has an unsupported extension. The message names the
            file and, where there is one, the row and column.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: is a directory, not a table file")
    file_format = TABLE_SUFFIXES.get(path.suffix.lower())
    if file_format is None:
        raise DataError(
            f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; "
            f"expected one of {', '.join(TABLE_SUFFIXES)}"
        )
    arrow_table = _read_csv(path) if file_format == "csv" else _read_parquet(path)
    _check_column_names(arrow_table.column_names, path)
    if arrow_table.num_rows == 0:
        raise DataError(
            f"{path}: the table has a header ({quoted_names(arrow_table.column_names)}) "
            "but no data rows"
        )
    return type_columns(pl.from_arrow(arrow_table), source=str(path))


def _read_csv(path: Path) -> pa.Table:
    raw = _read_bytes(path)
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"{path}: row {line}: byte 0x{raw[error.start]:02x} (byte offset {error.start}) is "
            "not valid UTF-8; save the file with UTF-8 encoding"
        ) from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty; expected a header row and data rows")
    if raw.count(b'"') % 2:
        problem = _structure_problem(text)
        if problem:
            raise DataError(f"{path}: {problem}")
    invalid_rows: list[pa_csv.InvalidRow] = []

    def record_invalid_row(row: pa_csv.InvalidRow) -> str:
        invalid_rows.append(row)
        return "skip"

    try:
        # Column names are generated so that the header arrives as data row 0, as text; this
        # keeps every cell a string whatever the header says.
        table = pa_csv.read_csv(
            io.BytesIO(raw),
            read_options=pa_csv.ReadOptions(autogenerate_column_names=True),
            parse_options=pa_csv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=record_invalid_row
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=_all_text(_header_width(text)), strings_can_be_null=False
            ),
        )
    except (pa.ArrowException, ValueError) as error:
        problem = _structure_problem(text) or f"cannot be parsed as CSV: {error}"
        raise DataError(f"{path}: {problem}") from None
    if invalid_rows:
        first = invalid_rows[0]
        problem = _structure_problem(text) or (
            f"a row has {_fields(first.actual_columns)} but the header has "
            f"{first.expected_columns}: {first.text[:80]!r}"
        )
        raise DataError(f"{path}: {problem}")
    table = table.cast(pa.schema([(field.name, pa.string()) for field in table.schema]))
    header = [str(name).strip() for name in table.slice(0, 1).to_pylist()[0].values()]
    return table.slice(1).rename_columns(header)


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pa_parquet.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable Parquet file: {error}") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot be read: {error.strerror or error}") from None


def _header_width(text: str) -> int:
    """Number of fields in the first non-blank record (0 when it cannot be told)."""
    try:
        for fields in csv.reader(io.StringIO(text, newline="")):
            if fields:
                return len(fields)
    except csv.Error:
        return 0
    return 0


def _all_text(width: int) -> dict[str, pa.DataType]:
    return {f"f{position}": pa.string() for position in range(width)}


def _structure_problem(text: str) -> str | None:
    """Describe the first structural problem of a CSV text, with its row number, or None.

    Used once pyarrow has found something wrong (it reports rows but not reliably their line):
    the text is scanned again with the standard library's CSV reader, which counts physical
    lines. Problems: a row with more or fewer fields than the header, a quote never closed, a
    quoted value followed by more text, no data rows.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    lines_read = 0
    records: list[int] = []
    try:
        for fields in reader:
            first_line = lines_read + 1
            lines_read = reader.line_num
            if not fields:
                continue
            records.append(len(fields))
            if len(fields) != records[0]:
                return _ragged_row_message(first_line, fields, records[0])
    except csv.Error as error:
        if "unexpected end of data" in str(error):
            return (
                f"row {lines_read + 1}: a quoted value in this row is never closed (its closing "
                "quote is missing)"
            )
        return f"row {lines_read + 1}: {error} (a quoted value must end at a comma or line end)"
    if len(records) == 1:
        return "the table has a header but no data rows"
    return None


def _ragged_row_message(row: int, fields: list[str], expected: int) -> str:
    blank_before_quote = any(
        field[:1].isspace() and field.lstrip().startswith('"') for field in fields
    )
    hint = (
        "a quote only starts a quoted value right after the comma: remove the blank between the "
        "comma and the quote"
        if blank_before_quote
        else "every row needs one value per column (leave a field empty for a missing value, "
        "quote values that contain commas)"
    )
    return f"row {row} has {_fields(len(fields))} but the header has {expected}; {hint}"


def _fields(count: int) -> str:
    return f"{count} field" if count == 1 else f"{count} fields"


def _check_column_names(names: list[str], path: Path) -> None:
    for position, name in enumerate(names, start=1):
        if not name:
            raise DataError(f"{path}: column {position} of the header has no name")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"{path}: the header repeats the column name(s) {quoted_names(repeated)}")
