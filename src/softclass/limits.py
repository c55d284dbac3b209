"""Limits on what reading a table may cost, so that a small file cannot take all the memory.

A 1 MB ``.csv.zst`` can hold 10 GB of text, a 40 MB CSV 100,000 columns (each a separate array
in every reader), a Parquet file billions of rows. :func:`softclass.data.read_table` stops with
one line naming the limit and the flag that raises it, before the cost is paid:

==========================  ==================  ====================================================
limit                       default             checked
==========================  ==================  ====================================================
``max_bytes``               4 GiB               decompressed bytes of a ``.gz``/``.bz2``/``.zst``
                                                CSV, while it is read (``--max-bytes``)
``max_ratio``               100                 decompressed / compressed size, once more than
                                                16 MiB came out (``--max-ratio``)
``max_columns``             10,000              the header (CSV) or schema (Parquet), before
                                                the rows are read (``--max-columns``)
``max_cells``               500,000,000         rows × columns: Parquet from its metadata, CSV
                                                once parsed and before typing (``--max-cells``)
``max_classes``             10,000              distinct values of the target column
                                                (``--max-classes``)
==========================  ==================  ====================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from softclass.errors import DataError

__all__ = ["DEFAULT_LIMITS", "LimitedStream", "ReadLimitError", "ReadLimits"]

_RATIO_FLOOR = 16 * 1024 * 1024  # no ratio check below this much output: small files are fine


class ReadLimitError(DataError):
    """Reading a table would exceed one of the :class:`ReadLimits`."""


@dataclass(frozen=True)
class ReadLimits:
    """The most a table may be; each field is raised by the command-line flag named beside it."""

    max_bytes: int = 4 * 1024**3  # decompressed bytes of a compressed CSV (--max-bytes)
    max_ratio: float = 100.0  # decompressed / compressed bytes (--max-ratio)
    max_columns: int = 10_000  # columns of the table (--max-columns)
    max_cells: int = 500_000_000  # rows × columns (--max-cells)
    max_classes: int = 10_000  # distinct classes of the target (--max-classes)

    def check_columns(self, n_columns: int, source: object) -> None:
        """Raises: ReadLimitError: more than ``max_columns`` columns."""
        if n_columns > self.max_columns:
            raise ReadLimitError(
                f"{source}: {n_columns:,} columns, more than the limit of {self.max_columns:,} "
                "(--max-columns raises it; every column costs memory in the reader)"
            )

    def check_cells(self, n_rows: int, n_columns: int, source: object) -> None:
        """Raises: ReadLimitError: more than ``max_cells`` rows × columns."""
        if n_rows * n_columns > self.max_cells:
            raise ReadLimitError(
                f"{source}: {n_rows:,} rows × {n_columns:,} columns = {n_rows * n_columns:,} "
                f"cells, more than the limit of {self.max_cells:,} (--max-cells raises it)"
            )

    def check_classes(self, n_classes: int, source: object) -> None:
        """Raises: ReadLimitError: more than ``max_classes`` distinct target values."""
        if n_classes > self.max_classes:
            raise ReadLimitError(
                f"{source}: the target column holds {n_classes:,} distinct classes, more than "
                f"the limit of {self.max_classes:,} (--max-classes raises it; is it the right "
                "target column?)"
            )


DEFAULT_LIMITS = ReadLimits()


class LimitedStream:
    """A decompressing stream that counts what comes out and stops at ``max_bytes`` or
    ``max_ratio`` (for ``pyarrow.PythonFile``: pyarrow's readers then stop with the error)."""

    def __init__(self, raw, path: str | os.PathLike[str], limits: ReadLimits) -> None:
        self._raw = raw
        self._path = path
        self._limits = limits
        self._compressed = max(1, os.path.getsize(path))
        self.decompressed = 0
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.decompressed += len(data)
        limits = self._limits
        if self.decompressed > limits.max_bytes:
            raise ReadLimitError(
                f"{self._path}: more than {limits.max_bytes:,} bytes once decompressed (from "
                f"{self._compressed:,}); --max-bytes raises the limit"
            )
        ratio = self.decompressed / self._compressed
        if self.decompressed > _RATIO_FLOOR and ratio > limits.max_ratio:
            raise ReadLimitError(
                f"{self._path}: decompresses more than {limits.max_ratio:g} times its size "
                f"({self._compressed:,} bytes gave {self.decompressed:,} so far), as a "
                "decompression bomb does; --max-ratio raises the limit"
            )
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.decompressed

    def close(self) -> None:
        self.closed = True
        self._raw.close()

    def __enter__(self) -> LimitedStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
