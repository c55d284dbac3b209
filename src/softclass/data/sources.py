"""The files behind :func:`softclass.data.reading.read_table` and
:class:`softclass.data.chunks.TableChunks`: which format a path is, how a CSV file is laid out
(delimiter, header, quoting), the read limits in force, and the messages that explain a file
that does not parse. Both readers use these helpers, so a file gets the same checks and the same
message whichever reads it.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
from collections import Counter
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pa_parquet

from softclass.data.messages import clip, quoted_names
from softclass.errors import DataError
from softclass.limits import DEFAULT_LIMITS, LimitedStream, ReadLimitError, ReadLimits

TABLE_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".tab": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
"""File name endings read_table understands (case-insensitive) and the format each means."""

COMPRESSION_SUFFIXES = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
"""Compressed CSV endings (after the table ending, e.g. ``data.csv.gz``) and their codec."""

DELIMITERS = (",", ";", "\t", "|")
"""Delimiters the sniffer chooses from, in order of preference when several fit."""

MAX_LINE_BYTES = 16 * 1024 * 1024
"""The longest CSV row softclass reads (16 MiB); a longer row is an error naming this limit."""

_CHUNK_BYTES = 1024 * 1024
_BLOCK_BYTES = 1024 * 1024  # pyarrow's block: rows up to this long parse fastest, in parallel
_SNIFF_LINES = 50
# The limits of the read_table call under way (every scan of the file opens it through _open).
_LIMITS: ContextVar[ReadLimits] = ContextVar("read_limits", default=DEFAULT_LIMITS)


@contextlib.contextmanager
def limits_in_force(limits: ReadLimits) -> Iterator[None]:
    """Within the block, every scan of a file counts against ``limits``."""
    token = _LIMITS.set(limits)
    try:
        yield
    finally:
        _LIMITS.reset(token)


def check_source(path: Path, delimiter: str | None) -> tuple[str, str | None]:
    """``(format, compression)`` of a table path ("csv", "parquet" or "jsonl"), once the path
    exists, is a table file (or a Parquet directory) and ``delimiter`` is usable.

    Raises:
        DataError: the path is missing, a directory without Parquet files, has an unsupported
            extension, or ``delimiter`` is not one usable character.
    """
    if not path.exists():
        raise DataError(f"{path}: no such file")
    file_format, compression = _format_of(path)
    if path.is_dir() and file_format != "parquet":
        raise DataError(
            f"{path}: is a directory, not a table file (a directory is read as a Parquet "
            "dataset only when its name ends in .parquet or it holds .parquet files)"
        )
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\n\r'):
        raise DataError(
            f"--delimiter {delimiter!r}: expected one character other than a quote or line break"
        )
    return file_format, compression


def _format_of(path: Path) -> tuple[str, str | None]:
    """``(table format, compression codec or None)`` from the file name (or directory)."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    compression = COMPRESSION_SUFFIXES.get(suffixes[-1]) if suffixes else None
    table_suffix = suffixes[-2] if compression and len(suffixes) >= 2 else path.suffix.lower()
    if compression:
        table_suffix = suffixes[-2] if len(suffixes) >= 2 else ""
    file_format = TABLE_SUFFIXES.get(table_suffix)
    if path.is_dir() and (file_format == "parquet" or any(path.glob("*.parquet"))):
        return "parquet", None
    if file_format in ("parquet", "jsonl") and compression:
        file_format = None
    if file_format is None:
        shown = "".join(path.suffixes[-2:]) if compression else path.suffix
        raise DataError(
            f"{path}: unsupported file type {shown or '(no extension)'!r}; expected one of "
            f"{', '.join(TABLE_SUFFIXES)} (CSV also as {', '.join(COMPRESSION_SUFFIXES)}) or a "
            "directory of .parquet files"
        )
    return file_format, compression


@dataclass(frozen=True)
class CsvLayout:
    """What a CSV file's head says: its column names, delimiter and where the data starts."""

    path: Path
    compression: str | None
    delimiter: str
    names: list[str]
    blank_lines: int
    limits: ReadLimits = DEFAULT_LIMITS

    def options(
        self, block_size: int, on_invalid_row: Callable[[pa_csv.InvalidRow], str]
    ) -> dict[str, object]:
        """Keyword arguments of pyarrow's ``read_csv``/``open_csv``: every cell as text, the
        header skipped, ragged rows passed to ``on_invalid_row``."""
        generated = [f"f{position}" for position in range(len(self.names))]
        return {
            "read_options": pa_csv.ReadOptions(
                column_names=generated,
                skip_rows_after_names=self.blank_lines + 1,
                block_size=block_size,
            ),
            "parse_options": pa_csv.ParseOptions(
                delimiter=self.delimiter,
                newlines_in_values=True,
                invalid_row_handler=on_invalid_row,
            ),
            "convert_options": pa_csv.ConvertOptions(
                column_types=dict.fromkeys(generated, pa.string()), strings_can_be_null=False
            ),
        }

    def open(self) -> pa.NativeFile:
        """The file's (decompressed) bytes, counted against the read limits."""
        with limits_in_force(self.limits):
            return _open(self.path, self.compression)

    def failure(self, error: Exception) -> DataError:
        """The DataError for a pyarrow failure while parsing, found by scanning the file again."""
        with limits_in_force(self.limits):
            return DataError(_explain(error, self.path, self.compression, self.delimiter))

    def ragged(self, first: pa_csv.InvalidRow) -> DataError:
        """The DataError for a row with more or fewer fields than the header."""
        with limits_in_force(self.limits):
            problem = _structure_problem(self.path, self.compression, self.delimiter)
        problem = problem or (
            f"a row has {_fields(first.actual_columns)} but the header has "
            f"{first.expected_columns}: {clip(repr(first.text), 80)}"
        )
        return DataError(f"{self.path}: {problem}")

    def no_rows(self) -> DataError:
        return DataError(
            f"{self.path}: the table has a header ({quoted_names(self.names)}) but no data rows"
        )


def csv_layout(path: Path, compression: str | None, delimiter: str | None) -> CsvLayout:
    """Read a CSV file's head: the delimiter (given, by extension or sniffed), the header's
    names (checked against the column limit) and, when its quotes are odd, its structure.

    Raises:
        DataError: the file is empty, not UTF-8, has no or a bad header, or a quote that is
            never closed; ReadLimitError: too many columns.
    """
    text = _head_text(path, compression)
    if not text.strip():
        raise DataError(f"{path}: the file is empty; expected a header row and data rows")
    if delimiter is None:
        suffix = path.name.lower().removesuffix("." + (compression or "")).rsplit(".", 1)[-1]
        delimiter = "\t" if suffix in ("tsv", "tab") else _sniff_delimiter(text)
    header, blank_lines = _header(text, delimiter, path)
    names = _named_columns([name.strip() for name in header])
    _LIMITS.get().check_columns(len(names), path)
    check_column_names(names, path)
    if _odd_quote_count(path, compression):
        problem = _structure_problem(path, compression, delimiter)
        if problem:
            raise DataError(f"{path}: {problem}")
    return CsvLayout(path, compression, delimiter, names, blank_lines, _LIMITS.get())


def read_csv(
    path: Path, compression: str | None, delimiter: str | None, pool: pa.MemoryPool | None = None
) -> pa.Table:
    """Every cell of a CSV file as text (pyarrow strings, allocated from ``pool``: default
    pyarrow's), with the checks and messages of :func:`softclass.data.read_table`."""
    layout = csv_layout(path, compression, delimiter)
    invalid_rows: list[pa_csv.InvalidRow] = []

    def record_invalid_row(row: pa_csv.InvalidRow) -> str:
        invalid_rows.append(row)
        return "skip"

    def parse(block_size: int) -> pa.Table:
        invalid_rows.clear()
        options = layout.options(block_size, record_invalid_row)
        return pa_csv.read_csv(layout.open(), memory_pool=pool, **options)

    try:
        try:
            table = parse(min(_BLOCK_BYTES, MAX_LINE_BYTES))
        except pa.ArrowInvalid as error:
            if "straddling" not in str(error) or MAX_LINE_BYTES <= _BLOCK_BYTES:
                raise
            table = parse(MAX_LINE_BYTES)  # a row longer than a block: larger blocks
    except ReadLimitError:
        raise
    except (pa.ArrowException, ValueError, OSError) as error:
        raise layout.failure(error) from None
    if invalid_rows:
        raise layout.ragged(invalid_rows[0])
    if table.num_rows == 0:
        raise layout.no_rows()
    return table.rename_columns(layout.names)


def _open(path: Path, compression: str | None) -> pa.NativeFile:
    """The file's (decompressed) bytes; a compressed file counted against the read limits."""
    try:
        stream = pa.input_stream(str(path), compression=compression)
    except (OSError, pa.ArrowException) as error:
        raise DataError(
            f"{path}: cannot be read: {getattr(error, 'strerror', None) or error}"
        ) from None
    if compression is None:
        return stream
    return pa.PythonFile(LimitedStream(stream, path, _LIMITS.get()), mode="r")


def check_parquet_size(path: Path, limits: ReadLimits) -> None:
    """Columns and rows × columns from the Parquet metadata, before any row is read."""
    import pyarrow.dataset as pa_dataset

    try:
        dataset = pa_dataset.dataset(str(path), format="parquet")
        n_columns = len(dataset.schema)
        limits.check_columns(n_columns, path)
        n_rows = dataset.count_rows()
    except (pa.ArrowException, OSError, ValueError) as error:
        if isinstance(error, ReadLimitError):
            raise
        return  # unreadable: read_parquet explains it
    limits.check_cells(n_rows, n_columns, path)


def _chunks(path: Path, compression: str | None) -> Iterator[bytes]:
    """The decompressed bytes of the file, :data:`_CHUNK_BYTES` at a time."""
    with _open(path, compression) as stream:
        while True:
            try:
                chunk = stream.read(_CHUNK_BYTES)
            except ReadLimitError:
                raise
            except (OSError, pa.ArrowException) as error:
                raise DataError(f"{path}: cannot be read: {error}") from None
            if not chunk:
                return
            yield chunk


def _head_text(path: Path, compression: str | None) -> str:
    """The first :data:`MAX_LINE_BYTES` (decompressed) of the file as text, BOM removed."""
    parts, size = [], 0
    for chunk in _chunks(path, compression):
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_LINE_BYTES:
            break
    head = b"".join(parts)[: MAX_LINE_BYTES + 1].removeprefix(codecs.BOM_UTF8)
    # a head longer than MAX_LINE_BYTES tells _header that the file goes on
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start >= len(head) - 3 and error.reason == "unexpected end of data":
            return head[: error.start].decode("utf-8")
        raise DataError(_not_utf8(path, head, error.start, 0, 0)) from None


def _not_utf8(path: Path, data: bytes, position: int, offset: int, lines_before: int) -> str:
    line = lines_before + data.count(b"\n", 0, position) + 1
    return (
        f"{path}: row {line}: byte 0x{data[position]:02x} (byte offset {offset + position}) is "
        "not valid UTF-8; save the file with UTF-8 encoding"
    )


def _sniff_delimiter(text: str) -> str:
    """The delimiter of :data:`DELIMITERS` that splits the first lines most consistently."""
    lines = [line for line in text[: 64 * 1024].splitlines()[:_SNIFF_LINES] if line.strip()]
    if len(lines) > 1 and len(text) > 64 * 1024:
        lines = lines[:-1]  # the last line may be cut
    best, best_width = ",", 1
    for delimiter in DELIMITERS:
        try:
            widths = {len(fields) for fields in csv.reader(lines, delimiter=delimiter)}
        except csv.Error:
            continue
        if len(widths) == 1 and (width := widths.pop()) > best_width:
            best, best_width = delimiter, width
    return best


def _header(text: str, delimiter: str, path: Path) -> tuple[list[str], int]:
    """The header fields and the number of blank lines before it.

    ``text`` is the head of the file (:func:`_head_text`); a header that does not end within it
    is longer than :data:`MAX_LINE_BYTES`.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    blank = 0
    try:
        for fields in reader:
            if len(fields) > 1 or any(field.strip() for field in fields):
                truncated = len(text) >= MAX_LINE_BYTES // 4 and len(text.encode()) > MAX_LINE_BYTES
                if truncated and text.count("\n") < reader.line_num:
                    raise DataError(f"{path}: {_long_line_message(blank + 1)}")
                return fields, blank
            blank += 1
    except csv.Error as error:
        raise DataError(
            f"{path}: row {blank + 1}: the header row cannot be read as CSV ({error})"
        ) from None
    raise DataError(f"{path}: the file has no header row; expected column names")


def _odd_quote_count(path: Path, compression: str | None) -> bool:
    return sum(chunk.count(b'"') for chunk in _chunks(path, compression)) % 2 == 1


def _explain(error: Exception, path: Path, compression: str | None, delimiter: str) -> str:
    """One line for a pyarrow failure, found by scanning the file again."""
    text = str(error)
    if "straddling" in text and (line := _long_line(path, compression)) is not None:
        return f"{path}: {_long_line_message(line)}"
    if "UTF8" in text or "UTF-8" in text:
        return _utf8_problem(path, compression)
    problem = _structure_problem(path, compression, delimiter) or (
        f"cannot be parsed as CSV: {clip(text.splitlines()[0] if text else repr(error), 160)}"
    )
    return f"{path}: {problem}"


def _long_line_message(line: int) -> str:
    return (
        f"row {line} is longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB, the longest "
        "row softclass reads (MAX_LINE_BYTES); check the delimiter and quotes, or split the row"
    )


def _long_line(path: Path, compression: str | None) -> int | None:
    """The 1-based number of the first line longer than :data:`MAX_LINE_BYTES`, or None."""
    line, length = 1, 0
    for chunk in _chunks(path, compression):
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if length + end - start > MAX_LINE_BYTES:
                return line
            line, length, start = line + 1, 0, end + 1
        length += len(chunk) - start
        if length > MAX_LINE_BYTES:
            return line
    return None


def _utf8_problem(path: Path, compression: str | None) -> str:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 0
    for chunk in _chunks(path, compression):
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as error:
            return _not_utf8(path, chunk, error.start, offset, lines)
        offset += len(chunk)
        lines += chunk.count(b"\n")
    return f"{path}: the file is not valid UTF-8; save the file with UTF-8 encoding"


def _structure_problem(path: Path, compression: str | None, delimiter: str) -> str | None:
    """Describe the first structural problem of a CSV file, with its row number, or None.

    Used once pyarrow has found something wrong (it reports rows but not reliably their line):
    the file is scanned again, streaming, with the standard library's CSV reader, which counts
    physical lines. Problems: a row with more or fewer fields than the header, a quote never
    closed, a quoted value followed by more text, no data rows.
    """
    stream = io.TextIOWrapper(
        _open(path, compression), encoding="utf-8-sig", errors="replace", newline=""
    )
    reader = csv.reader(stream, delimiter=delimiter, strict=True)
    lines_read = 0
    expected = None
    records = 0
    try:
        for fields in reader:
            first_line = lines_read + 1
            lines_read = reader.line_num
            if not fields:
                continue
            records += 1
            expected = len(fields) if expected is None else expected
            if len(fields) != expected:
                return _ragged_row_message(first_line, fields, expected, delimiter)
    except csv.Error as error:
        if "unexpected end of data" in str(error):
            return (
                f"row {lines_read + 1}: a quoted value in this row is never closed (its closing "
                "quote is missing)"
            )
        if "field larger than field limit" in str(error):
            return _long_line_message(lines_read + 1)
        return (
            f"row {lines_read + 1}: {error} (a quoted value must end at a {_named(delimiter)} "
            "or line end)"
        )
    finally:
        stream.close()
    if records == 1:
        return "the table has a header but no data rows"
    return None


def _named(delimiter: str) -> str:
    return {",": "comma", ";": "semicolon", "\t": "tab", "|": "bar"}.get(delimiter, repr(delimiter))


def _ragged_row_message(row: int, fields: list[str], expected: int, delimiter: str) -> str:
    blank_before_quote = any(
        field[:1].isspace() and field.lstrip().startswith('"') for field in fields
    )
    name = _named(delimiter)
    hint = (
        f"a quote only starts a quoted value right after the {name}: remove the blank between "
        f"the {name} and the quote"
        if blank_before_quote
        else "every row needs one value per column (leave a field empty for a missing value, "
        f"quote values that contain the delimiter {delimiter!r}; --delimiter sets it)"
    )
    return f"row {row} has {_fields(len(fields))} but the header has {expected}; {hint}"


def _fields(count: int) -> str:
    return f"{count} field" if count == 1 else f"{count} fields"


def read_parquet(path: Path) -> pl.DataFrame:
    if path.is_file():
        try:
            return pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError, ValueError):
            pass  # pyarrow reads some files polars does not, and words its errors better
    try:
        return pl.from_arrow(pa_parquet.read_table(path))
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataError(
            f"{path}: not a readable Parquet file: {clip(str(error).splitlines()[0], 160)}"
        ) from None


def _named_columns(names: list[str]) -> list[str]:
    """Header names with each empty one called ``Unnamed: i`` (0-based position), as pandas reads
    them: the first column of a file written by ``DataFrame.to_csv`` (the row index) has none."""
    return [name or f"Unnamed: {position}" for position, name in enumerate(names)]


def check_column_names(names: list[str], path: Path) -> None:
    """Every name non-empty and distinct (linear in the number of columns)."""
    for position, name in enumerate(names, start=1):
        if not name:
            raise DataError(f"{path}: column {position} of the header has no name")
    counts = Counter(names)
    if len(counts) != len(names):
        repeated = sorted(name for name, count in counts.items() if count > 1)
        raise DataError(f"{path}: the header repeats the column name(s) {quoted_names(repeated)}")
