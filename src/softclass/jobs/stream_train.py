"""``softclass train`` on a table larger than memory: in memory or streamed, and the streamed setup.

:func:`choose_streamed` compares what the in-memory path would hold (:data:`IN_MEMORY_FACTOR` ×
the table's uncompressed size: the table, its typed copy and the float32 feature matrix, as
measured on the issue-25 table) with the memory bound (``--memory``, default half of the
machine's memory); below it the in-memory path runs (faster on small tables), above it
:func:`prepare_streamed` does:

1. each rank reads the seeded sample of the training rows in its own chunks
   (:func:`softclass.data.stream_prepare.sample_chunks`), rank 0 gathers them, fits the
   recipe on them in chunk order (the recipe of one process) and broadcasts it;
2. each rank prepares only its own chunks (:func:`~softclass.data.stream.owned_chunks`) into a
   scratch directory, and the ranks share their chunks' row counts;
3. training streams windows of chunks (:class:`softclass.training.streamed.StreamedTrainer`).

The window (the shuffle buffer) and the sample are sized from the bound (:class:`MemoryPlan`):
what the bound leaves above the process at the start (:data:`START_BYTES`: Python, torch,
polars) and reading and preparing one chunk is shared between the recipe's sample and the
window, so the run's peak stays under the bound. A bound below that floor is named in a
warning, and the run goes on with the smallest sample and window.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from softclass.data.expansion import InputExpansion, as_dense
from softclass.data.prepare import PreparedData
from softclass.data.recipe import Recipe
from softclass.data.stream import TableSource, owned_chunks
from softclass.data.stream_prepare import (
    SAMPLE_ROWS,
    PreparedChunks,
    fit_sample,
    prepare_chunks,
    sample_chunks,
)
from softclass.errors import ConfigError, DataError
from softclass.training.distributed import (
    DistContext,
    all_reduce_sum,
    broadcast_object,
    gather_object,
    patient_group,
)
from softclass.training.streamed import SLAB_ROWS

__all__ = [
    "IN_MEMORY_FACTOR",
    "MemoryPlan",
    "RowProgress",
    "StreamedData",
    "choose_streamed",
    "default_memory",
]

IN_MEMORY_FACTOR = 20
"""Peak memory of the in-memory path over the table's Arrow size (measured 16-19× on the
issue-25 table at 1M and 4M rows: the raw table, the typed table and the feature matrix)."""
_PATIENCE_SECONDS = 3 * 3600  # ranks wait this long for rank 0's recipe and the others' chunks
_REPORT_ROWS = 100_000  # validation rows report.html measures a streamed model on, at most
_WINDOW_SHARE = 0.25  # of the memory left above the floor, for the window of prepared chunks
_SAMPLE_SHARE = 0.5  # of the memory left above the floor, for the recipe's sample
CHUNK_FACTOR = 15
"""Memory that reading and preparing one chunk adds, over the chunk's Arrow size (measured:
about 290 MiB for a 100,000-row group of the issue-25 table, 20 MB of Arrow: the read, the
typed copy, the prepared matrix, and what the readers' allocators keep)."""
START_BYTES = 320 * 2**20
"""What a streamed run counts for the process before it reads a row (Python, torch, polars and
softclass imported: measured 280-300 MiB). A constant, not the process's measured memory, so that
the sample and the window, and with them the results, are the same from run to run and on
every rank."""
_SLAB_COPIES = 3  # a slab of the window gathered, its features made contiguous, its batches
_SMALLEST_SAMPLE = 1_000
PROGRESS_SECONDS = 5.0  # a progress line this often while the table is read


class RowProgress:
    """Progress lines of one pass over a table: rows done and rows/s, one line every
    ``interval`` seconds at most (whatever stderr is: a run is never silent while it reads),
    and a closing line when any was written. ``line`` writes a line (the CLI's stderr)."""

    def __init__(
        self,
        phase: str,
        total: int | None,
        line: Callable[[str], None],
        *,
        interval: float = PROGRESS_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.phase, self.total, self.line = phase, total, line
        self.interval, self.clock = interval, clock
        self.rows = self.lines = 0
        self.started = self.last = clock()

    def advance(self, rows: int) -> None:
        """Count ``rows`` more; write a line when ``interval`` has passed since the last."""
        self.rows += rows
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            total = f" of {self.total:,}" if self.total else ""
            self._write(f"{self.phase}: {self.rows:,}{total} rows done, {self.speed(now)}")

    def finish(self, note: str = "") -> None:
        """The closing line, ending in ``note``, when lines were written (a pass shorter than
        the interval is quiet)."""
        if self.lines:
            now = self.clock()
            elapsed = now - self.started
            self._write(
                f"{self.phase}: {self.rows:,} rows done in {elapsed:.1f} s, {self.speed(now)}{note}"
            )

    def speed(self, now: float) -> str:
        return f"{self.rows / max(now - self.started, 1e-9):,.0f} rows/s"

    def _write(self, text: str) -> None:
        self.lines += 1
        self.line(text)


@dataclass(frozen=True)
class MemoryPlan:
    """How a streamed run shares its memory bound (bytes): ``floor`` is what it holds whatever
    the bound (the process at the start, reading and preparing one chunk, the smallest window
    of 2 chunks and a slab); what the bound leaves above the process and the chunk is shared
    between the recipe's sample and the window."""

    memory: int
    start: int  # the process before the run reads a row (START_BYTES)
    chunk: int  # reading and preparing one chunk
    row_bytes: float  # one row of the table in Arrow
    largest_chunk_rows: int

    @classmethod
    def of(cls, memory: int, source: TableSource) -> MemoryPlan:
        """The plan of ``source`` (scanned: its chunks known) under ``memory``."""
        largest = max((chunk.n_rows for chunk in source.chunks), default=1)
        row_bytes = source.arrow_bytes / max(source.n_rows or 1, 1)
        chunk = int(largest * row_bytes * CHUNK_FACTOR)
        return cls(memory, START_BYTES, chunk, row_bytes, largest)

    @property
    def free(self) -> int:
        """The bound less the process and one chunk (0 when they alone pass it)."""
        return max(0, self.memory - self.start - self.chunk)

    def sample_rows(self) -> int:
        """Training rows of the recipe's sample (typed in memory while the recipe is fitted)."""
        fitting = self.row_bytes * IN_MEMORY_FACTOR
        return int(max(_SMALLEST_SAMPLE, min(SAMPLE_ROWS, self.free * _SAMPLE_SHARE / fitting)))

    def slab_bytes(self, n_features: int) -> int:
        return SLAB_ROWS * ((n_features + 2) * 4 + 8) * _SLAB_COPIES

    def window_chunks(self, sizes: Sequence[int], n_features: int) -> int:
        """Chunks per window: this share of the free memory holds the window's own chunks
        (loaded once) and a slab; at least 2 (rows of two row groups mix), at most all."""
        chunk_bytes = max(max(sizes, default=1), 1) * (n_features * 4 + 8)
        room = self.free * _WINDOW_SHARE - self.slab_bytes(n_features)
        return int(min(len(sizes), max(2, room // chunk_bytes)))

    def floor(self, n_features: int) -> int:
        """The least peak of the run: the process, one chunk, a window of 2 chunks, a slab."""
        window = 2 * self.largest_chunk_rows * (n_features * 4 + 8)
        return self.start + self.chunk + window + self.slab_bytes(n_features)

    def warning(self, n_features: int) -> str | None:
        """A line when the bound is below :meth:`floor` (None when it is not)."""
        floor = self.floor(n_features)
        if self.memory >= floor:
            return None
        mib = 2**20
        return (
            f"--memory {self.memory / mib:,.0f} MiB is below what a streamed run on this table "
            f"needs at least, about {floor / mib:,.0f} MiB (this process at the start "
            f"{self.start / mib:,.0f} MiB, reading and preparing one chunk of "
            f"{self.largest_chunk_rows:,} rows {self.chunk / mib:,.0f} MiB, a window of 2 "
            f"chunks and a slab {(floor - self.start - self.chunk) / mib:,.0f} MiB): it runs "
            "with the smallest sample and window, above the bound"
        )


def default_memory() -> int:
    """Half of the machine's physical memory, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def choose_streamed(source: TableSource, memory: int) -> bool:
    """True when the in-memory path would need more than ``memory`` bytes for ``source``."""
    return source.arrow_bytes * IN_MEMORY_FACTOR > memory


@dataclass
class StreamedData:
    """A table prepared as chunks on disk, with what training and the report need.

    The scratch directory is removed by :meth:`close`. ``sync``: how torchrun ranks keep in
    step (:class:`~softclass.training.streamed.StreamedTrainer`'s ``sync``); ``line``: where
    this rank writes progress lines (None: nowhere).
    """

    recipe: Recipe
    chunks: PreparedChunks
    window_chunks: int
    identity: str
    warnings: tuple[str, ...]
    scratch: tempfile.TemporaryDirectory = field(repr=False)
    sync: str = "auto"
    line: Callable[[str], None] | None = field(default=None, repr=False)

    def epoch_progress(self) -> Callable[[int, int], None] | None:
        """The trainer's ``on_rows``: a :class:`RowProgress` line ("epoch 2: 1,200,000 of
        3,200,000 rows done, 81,000 rows/s") every :data:`PROGRESS_SECONDS` at most, and a
        closing line per epoch that wrote any (None without a ``line``)."""
        if self.line is None:
            return None
        total = sum(self.chunks.train_sizes)
        current: dict[int, RowProgress] = {}

        def on_rows(epoch: int, rows: int) -> None:
            if epoch not in current:
                current.clear()
                current[epoch] = RowProgress(
                    f"epoch {epoch}", total, self.line, interval=PROGRESS_SECONDS
                )
            progress = current[epoch]
            progress.advance(rows - progress.rows)
            if rows >= total:
                progress.finish()

        return on_rows

    @property
    def n_features(self) -> int:
        return self.recipe.n_features

    @property
    def n_classes(self) -> int:
        return self.recipe.n_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.recipe.classes

    @property
    def n_chunks(self) -> int:
        return len(self.chunks.train_sizes)

    def report_data(self) -> PreparedData:
        """This rank's first validation rows (at most 100,000; else training rows) as
        :class:`PreparedData` for report.html."""
        parts = []
        for part in ("validation", "train"):
            for chunk in self.chunks.owned:
                if sum(len(targets) for _, targets in parts) >= _REPORT_ROWS:
                    break
                parts.append(self.chunks.load(chunk, part))
            if parts and sum(len(targets) for _, targets in parts):
                break
        features = torch.cat([as_dense(features) for features, _ in parts])[:_REPORT_ROWS]
        targets = torch.cat([targets for _, targets in parts])[:_REPORT_ROWS]
        return PreparedData(
            features, targets, features, targets, self.recipe.classes, self.recipe, self.warnings
        )

    def close(self) -> None:
        self.scratch.cleanup()


def prepare_streamed(
    path: str | Path,
    *,
    memory: int,
    validation_fraction: float,
    seed: int,
    distributed: DistContext,
    delimiter: str | None = None,
    target: str | None = None,
    unknown: str = "ignore",
    options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    sync: str = "auto",
) -> StreamedData:
    """Fit the recipe (on every rank's share of the sample, on rank 0, broadcast), prepare
    this rank's chunks, share the row counts.

    ``options``: the recipe's options (normalization, divisors, missing, keep, drop, ids,
    typing), as :func:`softclass.data.prepare.prepare_table` takes them. ``progress``: where
    rank 0 writes its :class:`RowProgress` lines (None: no lines), also during the epochs;
    ``sync``: how the ranks keep in step in training, kept in the result.

    Raises:
        DataError, ConfigError: as :func:`~softclass.data.stream_prepare.fit_streamed_recipe`
            and :func:`prepare_chunks` (on the recipe's fit, every rank raises the same one).
    """
    source = TableSource(path, delimiter=delimiter)
    source.scan()  # a CSV's chunks (the sample's pass reads it for them anyway)
    options = dict(options or {})
    budget = MemoryPlan.of(memory, source)
    group = patient_group(distributed, _PATIENCE_SECONDS)
    owned = (
        None
        if not distributed.enabled
        else owned_chunks(len(source.scan()), distributed.rank, distributed.world_size)
    )
    fitted = _fit_recipe(
        source,
        owned,
        distributed,
        group,
        validation_fraction=validation_fraction,
        seed=seed,
        sample_rows=budget.sample_rows(),
        target=target,
        options=options,
        progress=progress,
    )
    fitted = broadcast_object(fitted, distributed, group)
    if isinstance(fitted, tuple):
        raise (ConfigError if fitted[0] == "config" else DataError)(fitted[1])
    recipe = Recipe.from_dict(fitted)
    scratch = tempfile.TemporaryDirectory(prefix="softclass-stream-")
    chunks = _prepare_owned(
        source, recipe, Path(scratch.name), owned, distributed, group,
        validation_fraction=validation_fraction, seed=seed, unknown=unknown, progress=progress,
    )  # fmt: skip
    warnings = chunks.warnings
    identity = f"{Path(path).resolve()}:{source.arrow_bytes}:{source.n_rows}:{fitted}"
    window = budget.window_chunks(chunks.train_sizes, recipe.n_features)
    below = budget.warning(recipe.n_features)
    notes = (*recipe.notes, *warnings, *(() if below is None else (below,)))
    line = progress if distributed.is_main else None
    return StreamedData(recipe, chunks, window, identity, notes, scratch, sync, line)


def _prepare_owned(
    source: TableSource,
    recipe: Recipe,
    directory: Path,
    owned: Sequence[int] | None,
    distributed: DistContext,
    group: object | None,
    *,
    validation_fraction: float,
    seed: int,
    unknown: str,
    progress: Callable[[str], None] | None,
) -> PreparedChunks:
    """This rank's chunks prepared into ``directory``, with every rank's row counts."""
    preparing = _progress("preparing", None, progress if distributed.is_main else None)
    train, validation, warnings = prepare_chunks(
        source,
        recipe,
        directory,
        owned,
        validation_fraction=validation_fraction,
        seed=seed,
        unknown=unknown,
        progress=preparing.advance if preparing else None,
    )
    if preparing:
        preparing.finish()
    _release_reader_memory()
    sizes = torch.zeros((2, len(source.chunks)), dtype=torch.int64)
    for chunk, count in train.items():
        sizes[0, chunk] = count
    for chunk, count in validation.items():
        sizes[1, chunk] = count
    all_reduce_sum(sizes, distributed, group)
    return PreparedChunks(
        directory,
        tuple(sorted(train)),
        tuple(sizes[0].tolist()),
        tuple(sizes[1].tolist()),
        warnings,
        InputExpansion.of(recipe.features),
    )


def _fit_recipe(
    source: TableSource,
    owned: Sequence[int] | None,
    distributed: DistContext,
    group: object | None,
    *,
    validation_fraction: float,
    seed: int,
    sample_rows: int,
    target: str | None,
    options: dict[str, Any],
    progress: Callable[[str], None] | None,
) -> Any:
    """The recipe's dict on rank 0 (None elsewhere), or ``("error", message)``: each rank reads
    the sample rows of its own chunks and rank 0 fits on all of them, in chunk order (the
    recipe one process fits on the same sample)."""
    shown = progress if distributed.is_main else None
    total = source.n_rows // distributed.world_size if source.n_rows else None
    reading = _progress("reading the recipe's sample", total, shown)
    try:
        pieces: Any = sample_chunks(
            source,
            owned,
            validation_fraction=validation_fraction,
            seed=seed,
            sample_rows=sample_rows,
            progress=reading.advance if reading else None,
        )
    except DataError as error:
        pieces = ("error", str(error))
    if reading:
        reading.finish()
    _release_reader_memory()
    gathered = gather_object(pieces, distributed, group)
    if not distributed.is_main:
        return None
    errors = [part for part in gathered if isinstance(part, tuple)]
    if errors:
        return errors[0]
    try:
        every = [piece for part in gathered for piece in part]
        return fit_sample(every, source, target, **options).to_dict()
    except DataError as error:
        return ("error", str(error))
    except ConfigError as error:  # every rank raises it, none waits for a recipe forever
        return ("config", str(error))


def _progress(
    phase: str, total: int | None, line: Callable[[str], None] | None
) -> RowProgress | None:
    return None if line is None else RowProgress(phase, total, line, interval=PROGRESS_SECONDS)


def _release_reader_memory() -> None:
    """Hand the memory pyarrow's pool keeps after a pass over the table back to the system
    (measured: about 75 MiB after the sample pass of the issue-25 table at 1M rows)."""
    import pyarrow

    pyarrow.default_memory_pool().release_unused()
