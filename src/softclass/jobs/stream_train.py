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

The window (the shuffle buffer) and the sample are sized from the bound.
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

__all__ = [
    "IN_MEMORY_FACTOR",
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
_WINDOW_SHARE = 0.25  # of the memory bound, for the window of prepared chunks
_SAMPLE_SHARE = 0.5  # of the memory bound, for the recipe's sample while it is fitted
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
            self._write(f"{self.phase}: {self.rows:,}{total} rows done, {self._speed(now)}")

    def finish(self) -> None:
        """The closing line, when lines were written (a pass shorter than the interval is quiet)."""
        if self.lines:
            now = self.clock()
            elapsed = now - self.started
            self._write(
                f"{self.phase}: {self.rows:,} rows done in {elapsed:.1f} s, {self._speed(now)}"
            )

    def _speed(self, now: float) -> str:
        return f"{self.rows / max(now - self.started, 1e-9):,.0f} rows/s"

    def _write(self, text: str) -> None:
        self.lines += 1
        self.line(text)


def default_memory() -> int:
    """Half of the machine's physical memory, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def choose_streamed(source: TableSource, memory: int) -> bool:
    """True when the in-memory path would need more than ``memory`` bytes for ``source``."""
    return source.arrow_bytes * IN_MEMORY_FACTOR > memory


@dataclass
class StreamedData:
    """A table prepared as chunks on disk, with what training and the report need.

    The scratch directory is removed by :meth:`close`.
    """

    recipe: Recipe
    chunks: PreparedChunks
    window_chunks: int
    identity: str
    warnings: tuple[str, ...]
    scratch: tempfile.TemporaryDirectory = field(repr=False)

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
        features = torch.cat([features for features, _ in parts])[:_REPORT_ROWS]
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
) -> StreamedData:
    """Fit the recipe (on every rank's share of the sample, on rank 0, broadcast), prepare
    this rank's chunks, share the row counts.

    ``options``: the recipe's options (normalization, divisors, missing, keep, drop, ids,
    typing), as :func:`softclass.data.prepare.prepare_table` takes them. ``progress``: where
    rank 0 writes its :class:`RowProgress` lines (None: no lines).

    Raises:
        DataError, ConfigError: as :func:`~softclass.data.stream_prepare.fit_streamed_recipe`
            and :func:`prepare_chunks` (on the recipe's fit, every rank raises the same one).
    """
    source = TableSource(path, delimiter=delimiter)
    options = dict(options or {})
    row_bytes = source.arrow_bytes / max(source.n_rows or 1, 1)
    sample_rows = int(min(SAMPLE_ROWS, memory * _SAMPLE_SHARE / (row_bytes * IN_MEMORY_FACTOR)))
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
        sample_rows=max(sample_rows, 1_000),
        target=target,
        options=options,
        progress=progress,
    )
    fitted = broadcast_object(fitted, distributed, group)
    if isinstance(fitted, tuple):
        raise (ConfigError if fitted[0] == "config" else DataError)(fitted[1])
    recipe = Recipe.from_dict(fitted)
    scratch = tempfile.TemporaryDirectory(prefix="softclass-stream-")
    preparing = _progress("preparing", None, progress if distributed.is_main else None)
    train, validation, warnings = prepare_chunks(
        source,
        recipe,
        Path(scratch.name),
        owned,
        validation_fraction=validation_fraction,
        seed=seed,
        unknown=unknown,
        progress=preparing.advance if preparing else None,
    )
    if preparing:
        preparing.finish()
    sizes = torch.zeros((2, len(source.chunks)), dtype=torch.int64)
    for chunk, count in train.items():
        sizes[0, chunk] = count
    for chunk, count in validation.items():
        sizes[1, chunk] = count
    all_reduce_sum(sizes, distributed, group)
    chunks = PreparedChunks(
        Path(scratch.name),
        tuple(sorted(train)),
        tuple(sizes[0].tolist()),
        tuple(sizes[1].tolist()),
        warnings,
    )
    identity = f"{Path(path).resolve()}:{source.arrow_bytes}:{source.n_rows}:{fitted}"
    window = _window_chunks(memory, chunks.train_sizes, recipe.n_features)
    return StreamedData(recipe, chunks, window, identity, (*recipe.notes, *warnings), scratch)


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


def _window_chunks(memory: int, sizes: Sequence[int], n_features: int) -> int:
    """Chunks per window: the window's features (held, cut into batches and copied once) in a
    quarter of the memory bound; at least 2 (rows of two row groups mix), at most all."""
    largest = max(sizes) if sizes else 1
    chunk_bytes = max(largest, 1) * (n_features * 4 + 8) * 3
    return int(min(len(sizes), max(2, memory * _WINDOW_SHARE // chunk_bytes)))
