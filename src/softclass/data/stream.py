"""Tables larger than memory: the rows as chunks, a hash split, and shuffled, sharded epochs.

A table is cut into **source chunks** that can be read on their own: the row groups of a Parquet
file (the files of a directory in name order, each file's row groups in order), or blocks of
``chunk_rows`` rows of a CSV file (read in order; a CSV cannot be entered in the middle, so every
reader parses it whole and keeps its own blocks). Chunk ``c`` holds the global rows
``start .. start + n_rows - 1`` (0-based, in file order).

* **Split by hash.** Row ``i`` is a validation row when ``splitmix64(i + seed·φ) / 2**64`` is
  below the validation fraction (:func:`hashed_fraction`): stable (the same rows for the same
  seed, whatever the chunking or the number of ranks) and no list of rows is kept.
* **Shards.** Rank ``r`` of ``R`` owns the chunks ``c`` with ``c % R == r``
  (:func:`owned_chunks`): disjoint, and together every chunk once.
* **Epoch order** (:class:`EpochPlan`). Each epoch permutes the chunks (seeded by seed and epoch)
  and cuts the permutation into windows of ``window_chunks`` chunks; the rows of one window are
  shuffled together (the shuffle buffer: several chunks, so rows of different row groups mix),
  and the window's shuffled rows are cut into global batches. The order depends on the seed, the
  epoch and the chunk sizes only, so two runs are equal, and ``R`` ranks walk the same global
  batches as one process: each takes the rows of its own chunks out of every global batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pa_parquet

from softclass.data.chunks import TableChunks
from softclass.data.sources import check_source
from softclass.errors import ConfigError, DataError

__all__ = [
    "CHUNK_ROWS",
    "EpochPlan",
    "SourceChunk",
    "TableSource",
    "hashed_fraction",
    "owned_chunks",
    "parse_memory",
    "row_hash",
]

CHUNK_ROWS = 100_000
"""Rows per CSV block (a Parquet chunk is a row group, whatever its size)."""

_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / φ, splitmix64's increment
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")
_SMALLEST_MEMORY = 64 * 2**20
# A compressed CSV's text is taken as this many times its file (gzip on tables: 3-6x), to
# compare with a memory bound before a row is read.
_COMPRESSION_FACTOR = 4


def parse_memory(text: str) -> int:
    """Bytes of a memory size as typed: ``2GB`` (10**9), ``1.5GiB`` (2**30), ``512MB``, ``800M``
    (the one-letter units are the binary ones), or a plain number of bytes.

    Raises:
        ConfigError: not a number with a known unit, or below 64 MiB.
    """
    match = _MEMORY.match(str(text))
    unit = match.group(2).lower() if match else ""
    unit = {"k": "kib", "m": "mib", "g": "gib", "t": "tib"}.get(unit, unit)
    if match is None or unit not in _UNITS:
        raise ConfigError(
            f"memory size {text!r}: expected a number and a unit such as 2GB, 1.5GiB or 800MB "
            f"(units: {', '.join(name.upper() for name in _UNITS if name)})"
        )
    size = int(float(match.group(1)) * _UNITS[unit])
    if size < _SMALLEST_MEMORY:
        raise ConfigError(f"memory size {text!r} is {size} bytes: expected at least 64MiB")
    return size


def row_hash(rows: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of ``rows + seed·φ``: uint64 (N,), a well-mixed integer per global row index.

    The finalizer of Steele, Lea and Flood's SplitMix64 (two xor-shift-multiply rounds); every
    bit of the output depends on every bit of the input.
    """
    with np.errstate(over="ignore"):
        mixed = np.asarray(rows, dtype=np.uint64) + np.uint64((seed * _GOLDEN) % 2**64)
        mixed = mixed + np.uint64(_GOLDEN)
        mixed = (mixed ^ (mixed >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        mixed = (mixed ^ (mixed >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return mixed ^ (mixed >> np.uint64(31))


def hashed_fraction(rows: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """bool (N,): True for the rows whose hash falls in the first ``fraction`` of the range.

    Each row is chosen with probability ``fraction``, independently of the others; the same
    rows for the same seed in any process and any chunking.
    """
    uniform = (row_hash(rows, seed) >> np.uint64(11)).astype(np.float64) / 2.0**53
    return uniform < fraction


def owned_chunks(n_chunks: int, rank: int, world_size: int) -> list[int]:
    """The chunks rank ``rank`` of ``world_size`` reads: ``c % world_size == rank``."""
    return list(range(rank, n_chunks, world_size))


@dataclass(frozen=True)
class SourceChunk:
    """One readable piece of the table: global rows ``start .. start + n_rows - 1``."""

    index: int
    start: int
    n_rows: int
    file: str
    row_group: int | None = None  # None: a CSV block


class TableSource:
    """A Parquet file, a directory of Parquet files, a CSV (also compressed) or JSON-lines
    file, read a chunk at a time (Parquet: a row group; else ``chunk_rows`` rows).

    Cells are raw (as :func:`softclass.data.read_table` with ``raw=True``: CSV cells are text),
    so the recipe's column types read them exactly as in the in-memory path.

    Attributes:
        chunks: the source chunks, in file order (for a CSV or JSON lines, known after the first
            :meth:`read`; before, an empty tuple).
        n_rows: the number of rows (None for a CSV or JSON lines before it was read once).
        arrow_bytes: the table's uncompressed size as the files say it (Parquet), else the file's
            size (a compressed file's times :data:`_COMPRESSION_FACTOR`): what the in-memory
            path would hold before typing, to compare with a memory bound.
    """

    def __init__(
        self, path: str | Path, chunk_rows: int = CHUNK_ROWS, delimiter: str | None = None
    ) -> None:
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        self.delimiter = delimiter
        files = _parquet_files(self.path)
        self.format = "parquet" if files else "table"
        self.chunks: tuple[SourceChunk, ...] = ()
        self.n_rows: int | None = None
        if files:
            self.chunks = _row_groups(files)
            self.n_rows = sum(chunk.n_rows for chunk in self.chunks)
            self.arrow_bytes = sum(
                pa_parquet.ParquetFile(name).metadata.row_group(group).total_byte_size
                for name in files
                for group in range(pa_parquet.ParquetFile(name).metadata.num_row_groups)
            )
        elif self.path.is_file():
            _, compression = check_source(self.path, delimiter)
            factor = _COMPRESSION_FACTOR if compression else 1
            self.arrow_bytes = self.path.stat().st_size * factor
        else:
            raise DataError(
                f"{self.path}: no such table (a CSV, JSON-lines or Parquet file, or a directory)"
            )

    def scan(self) -> tuple[SourceChunk, ...]:
        """The chunks, reading a CSV once to find them when it was not read yet."""
        if self.n_rows is None:
            for _ in self.read(owned=()):
                pass
        return self.chunks

    def read(
        self, owned: Sequence[int] | None = None
    ) -> Iterator[tuple[SourceChunk, pl.DataFrame]]:
        """``(chunk, rows)`` of each chunk in ``owned`` (None: every chunk), in file order."""
        wanted = None if owned is None else set(owned)
        if self.format == "parquet":
            for chunk in self.chunks:
                if wanted is None or chunk.index in wanted:
                    table = pa_parquet.ParquetFile(chunk.file).read_row_group(chunk.row_group)
                    yield chunk, pl.from_arrow(table)
            return
        yield from self._table_chunks(wanted)

    def _table_chunks(self, wanted: set[int] | None) -> Iterator[tuple[SourceChunk, pl.DataFrame]]:
        """CSV (also compressed) and JSON lines through :class:`~softclass.data.chunks.
        TableChunks`: the whole-table reader's header, delimiter, quoting and type rules and
        messages, ``chunk_rows`` rows at a time."""
        chunks, start = [], 0
        for frame in TableChunks(self.path, chunk_rows=self.chunk_rows, delimiter=self.delimiter):
            chunk = SourceChunk(len(chunks), start, frame.height, str(self.path))
            chunks.append(chunk)
            start += frame.height
            if wanted is None or chunk.index in wanted:
                yield chunk, frame
        self.chunks, self.n_rows = tuple(chunks), start


def streamable(path: Path) -> bool:
    """True when :class:`TableSource` can stream ``path``: an existing Parquet file or
    directory, CSV (also compressed) or JSON-lines file (else the in-memory reader names
    what is wrong)."""
    try:
        check_source(path, None)
    except DataError:
        return False
    return True


def _parquet_files(path: Path) -> list[str]:
    if path.is_dir():
        files = sorted(
            str(name) for name in path.iterdir() if name.suffix.lower() in (".parquet", ".pq")
        )
        if not files:
            raise DataError(f"{path}: the directory holds no .parquet files")
        return files
    return [str(path)] if path.suffix.lower() in (".parquet", ".pq") else []


def _row_groups(files: Sequence[str]) -> tuple[SourceChunk, ...]:
    chunks, start = [], 0
    for name in files:
        metadata = pa_parquet.ParquetFile(name).metadata
        for group in range(metadata.num_row_groups):
            n_rows = metadata.row_group(group).num_rows
            if n_rows:
                chunks.append(SourceChunk(len(chunks), start, n_rows, name, group))
                start += n_rows
    return tuple(chunks)


class EpochPlan:
    """The seeded order of one epoch over chunks of known sizes, as global batches per rank.

    Args:
        sizes: rows per chunk (after preparing: the training rows each chunk kept).
        batch_size: rows per global batch (the last batch of a window may be shorter).
        window_chunks: chunks shuffled together (the shuffle buffer, at least 1).
        seed: the run's seed.
        owned: the chunks this rank holds (None: all).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        window_chunks: int,
        seed: int,
        owned: Sequence[int] | None = None,
    ) -> None:
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.batch_size = batch_size
        self.window_chunks = max(1, window_chunks)
        self.seed = seed
        self.owned = set(range(len(self.sizes)) if owned is None else owned)

    def windows(self, epoch: int) -> list[list[int]]:
        """The epoch's chunk permutation cut into windows of ``window_chunks`` chunks."""
        order = np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.sizes))
        return [
            order[start : start + self.window_chunks].tolist()
            for start in range(0, len(order), self.window_chunks)
        ]

    def pieces(
        self, epoch: int, window: int, chunks: Sequence[int], offset: int
    ) -> Iterator[tuple[np.ndarray, int]]:
        """``(local_rows, n_global)`` per piece of window ``window`` (its ``chunks``).

        The epoch's rows are the windows' shuffled rows one after the other, cut into global
        batches of ``batch_size`` (so the count of batches is ``ceil(rows / batch_size)``, as in
        memory); a piece is the part of one global batch that falls in this window. ``offset``:
        the epoch's rows before this window. ``local_rows`` (int64) index the rows of this
        rank's chunks of the window, concatenated in window order; ``n_global`` is how many rows
        of the global batch the piece covers (every rank's).
        """
        sizes = self.sizes[list(chunks)]
        total = int(sizes.sum())
        order = np.random.default_rng([self.seed, epoch, 2, window]).permutation(total)
        local = np.full(total, -1, dtype=np.int64)
        position, counted = 0, 0
        for chunk, size in zip(chunks, sizes.tolist(), strict=True):
            if chunk in self.owned:
                local[position : position + size] = np.arange(counted, counted + size)
                counted += size
            position += size
        mapped = local[order]
        start = 0
        stop = min(total, (-offset) % self.batch_size or self.batch_size)
        while start < total:
            rows = mapped[start:stop]
            yield rows[rows >= 0], stop - start
            start, stop = stop, min(total, stop + self.batch_size)

    def n_rows(self) -> int:
        """Rows of an epoch (every rank's)."""
        return int(self.sizes.sum())

    def n_batches(self) -> int:
        """Global batches per epoch: ``ceil(rows / batch_size)``."""
        return -(-self.n_rows() // self.batch_size)
