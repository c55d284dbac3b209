"""Reading CSV and Parquet files into polars DataFrames, with errors a user can act on.

* **CSV** (``.csv``, ``.tsv``, ``.tab``, each optionally compressed: ``.gz``, ``.bz2``,
  ``.zst``) is parsed by pyarrow's multi-threaded reader straight from the file, every cell as
  text, then typed by :mod:`softclass.data.column_types`. The delimiter is ``--delimiter`` when
  given, a tab for ``.tsv``/``.tab``, else sniffed from the first lines among
  :data:`DELIMITERS` (the one that splits every line into the same number of fields, most fields
  first; a comma when none does).
* **Parquet** (``.parquet``, ``.pq``, or a directory of Parquet files — a dataset) is read by
  pyarrow's Parquet reader; its typed columns stay typed.
* **JSON lines** (``.jsonl``, ``.ndjson``: one JSON object per line) is read by
  :class:`softclass.data.chunks.TableChunks`; its numbers, booleans and text stay typed.

:class:`softclass.data.chunks.TableChunks` reads the same files a chunk of rows at a time, with
the same checks and messages.

A row may be at most :data:`MAX_LINE_BYTES` long. Every problem is a
:class:`~softclass.errors.DataError` whose message starts with the file name and, where there is
one, names the row (header = row 1, see :mod:`softclass.data.messages`) and the column. The file
is only scanned again (streaming, in constant memory) to explain a problem.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pa_compute

from softclass.data.column_types import TypingOptions, type_columns
from softclass.data.messages import quoted_names
from softclass.data.sources import (
    COMPRESSION_SUFFIXES,
    DELIMITERS,
    MAX_LINE_BYTES,
    TABLE_SUFFIXES,
    check_column_names,
    check_parquet_size,
    check_source,
    limits_in_force,
    read_csv,
    read_parquet,
)
from softclass.errors import DataError
from softclass.limits import DEFAULT_LIMITS, ReadLimits

__all__ = [
    "COMPRESSION_SUFFIXES",
    "DELIMITERS",
    "MAX_LINE_BYTES",
    "TABLE_SUFFIXES",
    "RawTable",
    "read_raw",
    "read_table",
]


def read_table(
    path: str | Path,
    *,
    delimiter: str | None = None,
    typing: TypingOptions | None = None,
    raw: bool = False,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> pl.DataFrame:
    """Read a CSV, Parquet or JSON-lines file (or a directory of Parquet files) into a DataFrame.

    A CSV file must be UTF-8 (a byte-order mark is allowed) with a header row naming every
    column and the same number of fields on every row; blank lines are skipped and values may
    be quoted (``"$72,000"``). Surrounding blanks of names and values are ignored.

    Args:
        path: the file or Parquet directory.
        delimiter: the CSV field delimiter (one character); default: see the module docstring.
        typing: decimal mark and extra missing markers for typing (``--decimal``,
            ``--na-values``).
        raw: return the cells untyped (CSV: every column ``String``; Parquet: as stored), for a
            recipe to type them as it was fitted.
        limits: the most the table may cost (:mod:`softclass.limits`): decompressed bytes
            and ratio, columns, rows × columns.

    Returns:
        One column per header name, typed by :func:`softclass.data.column_types.type_columns`
        (``Float64``, ``Boolean``, ``Datetime`` or ``String``; missing cells null) unless
        ``raw``.

    Raises:
        DataError: the file is missing, empty, has no data rows, is not UTF-8, has a row with
            more or fewer fields than the header or longer than :data:`MAX_LINE_BYTES`, has empty
            or repeated column names, mixes numbers and text in a column, or has an unsupported
            extension. The message names the file and, where there is one, the row and column.
        ReadLimitError: (a DataError) the table exceeds ``limits``; the message names the flag
            that raises the limit.
    """
    with limits_in_force(limits):
        frame = _read_frame(Path(path), delimiter, limits)
    if raw:
        return frame
    return type_columns(frame, source=str(path), options=typing)


class RawTable:
    """The cells of a table file as read, column by column: what ``read_table(path, raw=True)``
    gives, without holding every column as polars cells at once.

    A CSV file's text stays in pyarrow's strings (about 11 bytes a cell here, against 16 for a
    polars string view) and :meth:`get_column` converts one column when asked; Parquet and JSON
    lines are held as read. :meth:`rows` takes some rows of every column as a polars DataFrame
    (as ``read_table(path, raw=True)[rows]``) and :meth:`release` lets the cells go. After
    :meth:`consume`, each column is let go as :meth:`get_column` hands it out, so that a table
    typed a column at a time never holds the cells as read beside every typed column.
    """

    def __init__(self, cells: pa.Table | pl.DataFrame) -> None:
        self._cells: pa.Table | pl.DataFrame | None = cells
        self._names = cells.column_names if isinstance(cells, pa.Table) else cells.columns
        self._height = cells.num_rows if isinstance(cells, pa.Table) else cells.height
        self._consume = False
        self._lock = threading.Lock()  # columns are typed from two threads

    @property
    def columns(self) -> list[str]:
        self._held()
        return list(self._names)

    @property
    def width(self) -> int:
        return len(self.columns)

    @property
    def height(self) -> int:
        self._held()
        return self._height

    def consume(self) -> None:
        """From now on :meth:`get_column` lets each column go once handed out (each column can
        be read once; :meth:`rows` is refused)."""
        self._consume = True

    def get_column(self, name: str) -> pl.Series:
        """The column ``name`` as a polars Series, cells as read (CSV: ``String``)."""
        with self._lock:
            cells = self._held()
            if self._consume:  # the table keeps the other columns (no copy)
                if isinstance(cells, pa.Table):
                    self._cells = cells.drop_columns([name])
                else:
                    self._cells = cells.drop(name)
        if isinstance(cells, pa.Table):  # chunks joined by pyarrow: 0.55 -> 0.3-0.5 s for 1M x 30
            joined = cells.column(name).combine_chunks(pa.system_memory_pool())
            column = pl.from_arrow(joined).alias(name).rechunk()
            del joined
        else:  # one array: the typed column is one too, read without a copy
            column = cells.get_column(name).rechunk()
        del cells
        if self._consume:
            hand_back()
        return column

    def rows(self, positions: np.ndarray) -> pl.DataFrame:
        """The rows at ``positions`` (0-based int64), every column, cells as read."""
        cells = self._held()
        if self._consume:
            raise RuntimeError("the raw table hands out each column once: its rows are gone")
        if not isinstance(cells, pa.Table):
            return cells[positions]
        # A column at a time, its chunks (one per block the reader parsed) joined first: taking
        # from the chunked table cost 0.6 s for 200,000 of 1M rows × 30, this 0.2 s.
        pool = pa.system_memory_pool()  # the joined chunks' pages handed back
        columns = []
        for name in cells.column_names:
            joined = cells.column(name).combine_chunks(pool)
            taken = pa_compute.take(joined, positions, memory_pool=pool)
            columns.append(pl.from_arrow(taken).alias(name).rechunk())
            del joined, taken
        hand_back()
        return pl.DataFrame(columns)

    def release(self) -> None:
        """Let the cells go (their memory handed back); later calls fail."""
        self._cells = None
        hand_back()

    def _held(self) -> pa.Table | pl.DataFrame:
        if self._cells is None:
            raise RuntimeError("the raw table was released")
        return self._cells


def hand_back() -> None:
    """Hand the memory of freed cells back to the system: pyarrow's pool, and malloc's free
    pages (glibc's ``malloc_trim``; a few ms) where a CSV's cells were read into."""
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (another C library, another system)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # TypeError: Windows has no CDLL(None)
        return None


_MALLOC_TRIM = _malloc_trim()
_TRIM_PERIOD = 0.05  # seconds between malloc_trim calls while a CSV file is parsed


@contextmanager
def _trimming(period: float) -> Iterator[None]:
    """malloc's free pages handed back every ``period`` seconds from a thread while the block
    runs: pyarrow's multi-threaded CSV reader frees each block's parse buffers as it goes, and
    left to the end of the read they held 220-270 MiB beside the 310 MiB of cells of a 1M × 30
    table (the read's peak: 528-578 → 387-433 MiB, the read's time unchanged)."""
    if _MALLOC_TRIM is None:
        yield
        return
    stop = threading.Event()

    def trim() -> None:
        while not stop.wait(period):
            _MALLOC_TRIM(0)

    thread = threading.Thread(target=trim, name="softclass-trim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def read_raw(
    path: str | Path, *, delimiter: str | None = None, limits: ReadLimits = DEFAULT_LIMITS
) -> RawTable:
    """Read a table file as :func:`read_table` with ``raw=True`` does, with the same checks and
    errors, into a :class:`RawTable` (a CSV's cells kept in pyarrow's compact form)."""
    path = Path(path)
    with limits_in_force(limits):
        file_format, compression = check_source(path, delimiter)
        if file_format == "csv":  # in malloc's pages, each column's handed back once let go
            with _trimming(_TRIM_PERIOD):
                table = read_csv(path, compression, delimiter, pa.system_memory_pool())
            hand_back()
            limits.check_cells(table.num_rows, table.num_columns, path)
            return RawTable(table)
        if file_format == "parquet" and path.is_file():
            table = _parquet_cells(path, limits)
            if table is not None:
                return RawTable(table)
        return RawTable(_read_frame(path, delimiter, limits))


def _parquet_cells(path: Path, limits: ReadLimits) -> pa.Table | None:
    """A Parquet file's columns as pyarrow reads them into malloc's pages (handed back as each
    column is typed; polars' allocator keeps freed pages), converted to polars a column at a
    time as :func:`read_table` converts a Parquet dataset; None when pyarrow cannot read it or
    a column would not convert (then :func:`read_table`'s road gives the table or the error)."""
    import pyarrow.dataset as pa_dataset  # 0.24 s of imports (pandas among them): Parquet only

    check_parquet_size(path, limits)
    try:
        dataset = pa_dataset.dataset(path, format="parquet")
        table = dataset.to_table(memory_pool=pa.system_memory_pool())
        pl.from_arrow(table.slice(0, 0))  # every column's type converts
    except (pa.ArrowException, OSError, ValueError, TypeError, pl.exceptions.PolarsError):
        return None
    hand_back()
    check_column_names(table.column_names, path)
    if table.num_rows == 0:
        return None
    return table


def _read_frame(path: Path, delimiter: str | None, limits: ReadLimits) -> pl.DataFrame:
    file_format, compression = check_source(path, delimiter)
    if file_format == "csv":
        columns = [read_csv(path, compression, delimiter)]
        limits.check_cells(columns[0].num_rows, columns[0].num_columns, path)
        return _polars_frame(columns)
    if file_format == "jsonl":
        from softclass.data.chunks import TableChunks

        chunks = TableChunks(path, limits=limits)
        return pl.concat(list(chunks), how="vertical")
    check_parquet_size(path, limits)
    frame = read_parquet(path)
    check_column_names(frame.columns, path)
    if frame.height == 0:
        raise DataError(
            f"{path}: the table has a header ({quoted_names(frame.columns)}) but no data rows"
        )
    return frame


def _polars_frame(holder: list[pa.Table]) -> pl.DataFrame:
    """The one table in ``holder`` as a polars DataFrame, converted a column at a time.

    The table is taken out of ``holder`` (the caller keeps no reference to it), so each Arrow
    column is freed once converted and pyarrow's allocator hands the memory back: the text
    cells are held twice only one column at a time (``pl.from_arrow`` of the whole table held
    both copies, and pyarrow kept its pages after: about 4x the typed table for a CSV of
    numbers; a reference left in the caller kept every column until the end, 1.6x).
    """
    table = holder.pop()
    columns = []
    pool = pa.default_memory_pool()
    while table.num_columns:
        columns.append(pl.from_arrow(table.column(0)).alias(table.column_names[0]).rechunk())
        table = table.remove_column(0)
        pool.release_unused()
    return pl.DataFrame(columns)
