"""Reading a table a chunk of rows at a time, in order, in memory bounded by the chunk.

:class:`TableChunks` reads what :func:`softclass.data.read_table` reads — CSV (also compressed),
Parquet files and directories, JSON lines — and yields polars DataFrames of at most
``chunk_rows`` rows, in file order, with the same checks and messages:

* **CSV** is parsed by pyarrow's streaming reader (``open_csv``) in blocks of 1 MiB (read again
  in blocks of :data:`~softclass.data.reading.MAX_LINE_BYTES` from where it stopped when a row is
  longer), every cell as text, with the header,
  delimiter, quoting and ragged-row rules of :mod:`softclass.data.reading` (the helpers are
  shared, not copied).
* **Parquet** is read one record batch at a time (``ParquetFile.iter_batches``, one row group
  at a time: asked for every row group at once, pyarrow pre-buffers the whole file); a
  directory's files are read in the order the whole-table reader uses, each batch cast to the
  dataset's schema.
* **JSON lines** is read in blocks of whole lines; the column types are those of the first
  block (whole numbers widened to floats, so that a later ``1.5`` fits), and a later block that
  does not fit them is an error naming its lines.

Cells are raw, as ``read_table(..., raw=True)`` gives them (CSV text; Parquet and JSON typed as
stored); ``column_types`` reads each chunk by fixed :class:`ColumnType`\\ s instead (a chunk
cannot be typed on its own: two chunks could disagree). The :class:`~softclass.limits.ReadLimits`
apply as for a whole table; rows × columns is counted as the rows arrive.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pa_parquet

from softclass.data.column_types import MISSING_MARKERS, BadCells, ColumnType, read_column
from softclass.data.messages import clip, quoted_names
from softclass.data.sources import (
    MAX_LINE_BYTES,
    check_source,
    csv_layout,
    limits_in_force,
)
from softclass.errors import DataError
from softclass.limits import DEFAULT_LIMITS, ReadLimitError, ReadLimits

__all__ = ["CHUNK_ROWS", "TableChunks", "rebatch"]

CHUNK_ROWS = 100_000
"""Rows per chunk by default: a few tens of MB for a table of tens of columns."""

_JSON_BLOCK_BYTES = 4 * 1024 * 1024
_CSV_BLOCK_BYTES = 1024 * 1024  # pyarrow's block: a row longer than this is read again larger


class _RowLongerThanBlock(Exception):
    """A CSV row does not fit in the block: the pass is started again with larger blocks."""


class TableChunks:
    """A table file read as a sequence of DataFrames of at most ``chunk_rows`` rows.

    Opening checks what can be checked before any row is read (the file exists and has a table
    extension, the CSV header, the Parquet schema and row count against ``limits``); iterating
    reads the rows, once per iteration.

    Args:
        path: a CSV (``.csv``, ``.tsv``, ``.tab``, optionally ``.gz``/``.bz2``/``.zst``),
            Parquet (``.parquet``, ``.pq``, or a directory of them) or JSON-lines (``.jsonl``,
            ``.ndjson``) file.
        chunk_rows: most rows per chunk (at least 1).
        delimiter: the CSV delimiter (default: as :func:`~softclass.data.read_table`).
        limits: the most the table may cost (:mod:`softclass.limits`).
        column_types: read the named columns by these types (:func:`~softclass.data.
            column_types.read_column`); a cell that cannot be read is a DataError naming its row.
        missing_markers: cells read as missing under ``column_types``.

    Attributes:
        columns: the column names, in table order.
        n_rows: the number of data rows when the file says it before reading (Parquet), else
            None.

    Raises:
        DataError: as :func:`~softclass.data.read_table`, when opened or while iterating;
            ``chunk_rows`` below 1.
        ReadLimitError: the table exceeds ``limits`` (a DataError naming the flag).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        chunk_rows: int = CHUNK_ROWS,
        delimiter: str | None = None,
        limits: ReadLimits = DEFAULT_LIMITS,
        column_types: Sequence[ColumnType] = (),
        missing_markers: Sequence[str] = MISSING_MARKERS,
    ) -> None:
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise DataError(f"chunk_rows {chunk_rows!r}: expected a whole number, 1 or more")
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        self.limits = limits
        self._types = {column_type.name: column_type for column_type in column_types}
        self._missing_markers = tuple(missing_markers)
        self.format, compression = check_source(self.path, delimiter)
        self.n_rows: int | None = None
        if self.format == "csv":
            with limits_in_force(limits):
                self._csv = csv_layout(self.path, compression, delimiter)
            self.columns = list(self._csv.names)
        elif self.format == "parquet":
            self._files, self._schema = _parquet_files(self.path, limits)
            self.columns = list(self._schema.names)
            self.n_rows = sum(
                pa_parquet.ParquetFile(file).metadata.num_rows for file in self._files
            )
            limits.check_cells(self.n_rows, len(self.columns), self.path)
            if self.n_rows == 0:
                raise DataError(
                    f"{self.path}: the table has a header ({quoted_names(self.columns)}) but no "
                    "data rows"
                )
        else:
            self._json_schema = _json_schema(self.path)
            self.columns = list(self._json_schema.names())
            limits.check_columns(len(self.columns), self.path)
        unknown = sorted(set(self._types) - set(self.columns))
        if unknown:
            raise DataError(
                f"{self.path}: column_types name column(s) {quoted_names(unknown)} the table "
                f"does not have; its columns: {quoted_names(self.columns)}"
            )

    def __iter__(self) -> Iterator[pl.DataFrame]:
        batches = {"csv": self._csv_batches, "parquet": self._parquet_batches}.get(
            self.format, self._json_batches
        )
        offset = 0
        for frame in rebatch(batches(), self.chunk_rows):
            offset += frame.height
            self.limits.check_cells(offset, len(self.columns), self.path)
            yield self._typed(frame, offset - frame.height)

    def _typed(self, frame: pl.DataFrame, offset: int) -> pl.DataFrame:
        if not self._types:
            return frame
        columns = []
        for column in frame.get_columns():
            column_type = self._types.get(column.name)
            if column_type is not None:
                column, bad = read_column(column, column_type, self._missing_markers)
                if bad is not None:
                    moved = BadCells(bad.rows + offset, bad.column, bad.texts, bad.problem)
                    raise DataError(moved.message(str(self.path)))
            columns.append(column)
        return pl.DataFrame(columns)

    def _csv_batches(self) -> Iterator[pl.DataFrame]:
        """The rows in blocks of :data:`_CSV_BLOCK_BYTES`; should a row be longer than that,
        read again in blocks of :data:`MAX_LINE_BYTES`, from the first row not yet given."""
        block_bytes, given = _CSV_BLOCK_BYTES, 0
        while True:
            try:
                for frame in self._csv_pass(block_bytes, skip=given):
                    given += frame.height
                    yield frame
                return
            except _RowLongerThanBlock:
                block_bytes = MAX_LINE_BYTES

    def _csv_pass(self, block_bytes: int, skip: int) -> Iterator[pl.DataFrame]:
        layout = self._csv
        invalid_rows: list[pa_csv.InvalidRow] = []

        def record_invalid_row(row: pa_csv.InvalidRow) -> str:
            invalid_rows.append(row)
            return "skip"

        rows = 0
        try:
            reader = pa_csv.open_csv(
                layout.open(), **layout.options(block_bytes, record_invalid_row)
            )
            for batch in reader:
                if invalid_rows:
                    break
                rows += batch.num_rows
                if rows > skip:
                    batch = batch.slice(max(0, batch.num_rows - (rows - skip)))
                    yield pl.from_arrow(batch.rename_columns(layout.names))
        except ReadLimitError:
            raise
        except (pa.ArrowException, ValueError, OSError) as error:
            if "straddling" in str(error) and block_bytes < MAX_LINE_BYTES:
                raise _RowLongerThanBlock from None
            raise layout.failure(error) from None
        if invalid_rows:
            raise layout.ragged(invalid_rows[0])
        if rows == 0:
            raise layout.no_rows()

    def _parquet_batches(self) -> Iterator[pl.DataFrame]:
        for file in self._files:
            try:
                parquet = pa_parquet.ParquetFile(file)
                for group in range(parquet.num_row_groups):
                    # One row group at a time: over all of them, pyarrow pre-buffers the file.
                    batches = parquet.iter_batches(batch_size=self.chunk_rows, row_groups=[group])
                    for batch in batches:
                        if batch.schema != self._schema:
                            batch = pa.Table.from_batches([batch]).cast(self._schema)
                        yield pl.from_arrow(batch)
            except (pa.ArrowException, OSError, ValueError) as error:
                raise DataError(
                    f"{file}: not a readable Parquet file: {clip(str(error).splitlines()[0], 160)}"
                ) from None

    def _json_batches(self) -> Iterator[pl.DataFrame]:
        schema = self._json_schema
        first_line = 1
        for block in _line_blocks(self.path):
            lines = block.count(b"\n") + (not block.endswith(b"\n"))
            try:
                frame = pl.read_ndjson(io.BytesIO(block), schema=schema)
            except (pl.exceptions.PolarsError, ValueError) as error:
                raise DataError(
                    f"{self.path}: lines {first_line}-{first_line + lines - 1} cannot be read as "
                    f"JSON objects with the columns and types of the first lines "
                    f"({_schema_text(schema)}): {clip(str(error).splitlines()[0], 160)}"
                ) from None
            first_line += lines
            yield frame


def rebatch(frames: Iterator[pl.DataFrame], chunk_rows: int) -> Iterator[pl.DataFrame]:
    """The rows of ``frames``, in order, as DataFrames of exactly ``chunk_rows`` rows (the last
    one fewer); empty frames are dropped. Holds at most ``chunk_rows`` rows plus one frame."""
    pending: list[pl.DataFrame] = []
    held = 0
    for frame in frames:
        while frame.height:
            take = min(chunk_rows - held, frame.height)
            pending.append(frame.slice(0, take))
            frame = frame.slice(take)
            held += take
            if held == chunk_rows:
                yield pending[0] if len(pending) == 1 else pl.concat(pending, rechunk=True)
                pending, held = [], 0
    if held:
        yield pending[0] if len(pending) == 1 else pl.concat(pending, rechunk=True)


def _parquet_files(path: Path, limits: ReadLimits) -> tuple[list[str], pa.Schema]:
    """The Parquet files of ``path`` in reading order and the schema every batch is cast to."""
    import pyarrow.dataset as pa_dataset

    try:
        dataset = pa_dataset.dataset(str(path), format="parquet")
        files = list(dataset.files)
        schema = dataset.schema
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataError(
            f"{path}: not a readable Parquet file: {clip(str(error).splitlines()[0], 160)}"
        ) from None
    limits.check_columns(len(schema), path)
    names = list(schema.names)
    if len(set(names)) != len(names) or not all(names):
        from softclass.data.sources import check_column_names

        check_column_names(names, path)
    return files, schema


def _line_blocks(path: Path) -> Iterator[bytes]:
    """The file's bytes in blocks of whole lines (about :data:`_JSON_BLOCK_BYTES` each), blank
    lines kept (polars skips them)."""
    rest = b""
    with open(path, "rb") as handle:
        while data := handle.read(_JSON_BLOCK_BYTES):
            data = rest + data
            end = data.rfind(b"\n")
            if end < 0:
                if len(data) > MAX_LINE_BYTES:
                    raise DataError(
                        f"{path}: a line is longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB, "
                        "the longest row softclass reads"
                    )
                rest = data
                continue
            rest = data[end + 1 :]
            if data[: end + 1].strip():
                yield data[: end + 1]
    if rest.strip():
        yield rest


def _json_schema(path: Path) -> pl.Schema:
    """The columns and types of the first block of a JSON-lines file; whole numbers widened to
    Float64 and all-null columns read as text."""
    first = next(_line_blocks(path), None)
    if first is None:
        raise DataError(f"{path}: the file is empty; expected one JSON object per line")
    try:
        frame = pl.read_ndjson(io.BytesIO(first))
    except (pl.exceptions.PolarsError, ValueError) as error:
        raise DataError(
            f"{path}: not JSON lines (one JSON object per line): "
            f"{clip(str(error).splitlines()[0], 160)}"
        ) from None
    if not frame.width:
        raise DataError(f"{path}: the JSON objects have no fields; expected one per column")
    widened = {}
    for name, dtype in frame.schema.items():
        if dtype.is_integer():
            dtype = pl.Float64
        elif dtype == pl.Null:
            dtype = pl.String
        elif dtype.is_nested() or dtype == pl.Object:
            raise DataError(
                f"{path}: field {name!r} holds {dtype} values; expected numbers, booleans or "
                "text (one column per field)"
            )
        widened[name] = dtype
    return pl.Schema(widened)


def _schema_text(schema: pl.Schema) -> str:
    shown = ", ".join(f"{name}: {dtype}" for name, dtype in list(schema.items())[:6])
    return shown + (" …" if len(schema) > 6 else "")
