"""Preparing a table larger than memory: the recipe fitted on a sample, the chunks prepared once.

:func:`fit_streamed_recipe` reads the table once, a chunk at a time, and keeps a seeded sample of
its training rows (each row kept when its hash falls below ``sample_rows / n_rows``, see
:func:`softclass.data.stream.hashed_fraction`; the validation rows are never in it). The recipe is
:meth:`softclass.data.Recipe.fit` on that sample, by the same code as the in-memory path
(:func:`softclass.data.recipe.typed_table`, then ``Recipe.fit``): column types, the ID-column
rule, the categories (the 199 most frequent + "(other)"), the scales, dates, missing-value
indicators and fill values are those of the sample. A table of at most ``sample_rows`` training
rows is its own sample, so its recipe is the in-memory one exactly.

**The rest checked.** :func:`prepare_chunks` then reads every chunk through the recipe
(:meth:`Recipe.prepare`): a cell the sample's column types cannot read is an error naming its row
in the table, a category the sample never saw is counted (all zeros, or "(other)" for a column
that has one) and reported, as for a validation row in the in-memory path.

Each prepared chunk is saved as ``.npy`` files (float32 features, int64 targets), its training and
validation rows apart, in a scratch directory: epochs then load a few chunks at a time
(:mod:`softclass.training.streamed`) instead of reading and typing the table again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from softclass.data.column_types import TypingOptions
from softclass.data.expansion import FeatureRows, InputExpansion, take_rows
from softclass.data.recipe import Recipe, typed_table
from softclass.data.stream import SourceChunk, TableSource, hashed_fraction
from softclass.errors import DataError

__all__ = ["PreparedChunks", "fit_streamed_recipe", "prepare_chunks", "validation_mask"]

SAMPLE_ROWS = 1_000_000
"""Training rows the recipe is fitted on at most (a seeded sample of a larger table)."""
_SAMPLE_SALT = 0x5A3C_91E7  # the sample's hash differs from the split's


def validation_mask(rows: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """bool (N,): which global rows are validation rows (the hash split; none for 0)."""
    if fraction <= 0:
        return np.zeros(len(rows), dtype=bool)
    return hashed_fraction(rows, fraction, seed)


def fit_streamed_recipe(
    source: TableSource,
    target: str | None = None,
    *,
    validation_fraction: float = 0.2,
    seed: int = 0,
    sample_rows: int = SAMPLE_ROWS,
    normalization: str = "zscore",
    divisors: dict[str, float] | None = None,
    missing: str = "impute",
    keep: Sequence[str] = (),
    drop: Sequence[str] = (),
    ids: Sequence[str] = (),
    typing: TypingOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> Recipe:
    """The recipe of ``source``'s training rows, fitted on a seeded sample of them.

    Args: as :func:`softclass.data.prepare.prepare_table`; ``sample_rows``: the sample's
    expected size (every training row when the table has no more rows than this);
    ``progress``: called with the row count of each chunk read.

    Raises:
        DataError, ConfigError: as :meth:`Recipe.fit` on the sample.
    """
    pieces = sample_chunks(
        source,
        None,
        validation_fraction=validation_fraction,
        seed=seed,
        sample_rows=sample_rows,
        progress=progress,
    )
    return fit_sample(
        pieces,
        source,
        target,
        normalization=normalization,
        divisors=divisors,
        missing=missing,
        keep=keep,
        drop=drop,
        ids=ids,
        typing=typing,
    )


def sample_chunks(
    source: TableSource,
    owned: Sequence[int] | None,
    *,
    validation_fraction: float,
    seed: int,
    sample_rows: int,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[int, pl.DataFrame]]:
    """``(chunk index, sampled training rows)`` of the chunks in ``owned`` (None: all): the
    rows :func:`fit_streamed_recipe` fits on, so torchrun ranks can each read their share."""
    source.scan()
    n_rows = source.n_rows or 0
    share = min(1.0, sample_rows / max(n_rows, 1))
    kept = []
    for chunk, frame in source.read(owned):
        rows = np.arange(chunk.start, chunk.start + chunk.n_rows, dtype=np.int64)
        chosen = ~validation_mask(rows, validation_fraction, seed)
        if share < 1.0:
            chosen &= hashed_fraction(rows, share, seed ^ _SAMPLE_SALT)
        kept.append((chunk.index, frame.filter(pl.Series(chosen))))
        if progress is not None:
            progress(chunk.n_rows)
    return kept


def fit_sample(
    pieces: Sequence[tuple[int, pl.DataFrame]],
    source: TableSource,
    target: str | None = None,
    **options: Any,
) -> Recipe:
    """The recipe fitted on the sampled ``pieces`` (from any ranks), taken in chunk order
    (the options as :func:`fit_streamed_recipe` takes them)."""
    ordered = [frame for _, frame in sorted(pieces, key=lambda piece: piece[0])]
    # one buffer: sums in the order of one read
    sample = pl.concat(ordered, rechunk=True) if ordered else pl.DataFrame()
    if sample.height == 0:
        raise DataError(
            f"{source.path}: no training row was sampled from its {source.n_rows or 0} rows"
        )
    drop, ids, typing = options.get("drop", ()), options.get("ids", ()), options.get("typing")
    typed, types = typed_table(
        sample, target, drop=drop, ids=ids, typing=typing, source=str(source.path)
    )
    return Recipe.fit(typed, target, **options, column_types=types)


@dataclass(frozen=True)
class PreparedChunks:
    """This rank's prepared chunks in ``directory``, and every chunk's row counts.

    ``train_sizes[c]`` / ``validation_sizes[c]``: the training / validation rows chunk ``c``
    kept (for every chunk of the table, this rank's and the others'); ``warnings``: what
    preparing this rank's chunks found (unknown categories, rows left out).
    """

    directory: Path
    owned: tuple[int, ...]
    train_sizes: tuple[int, ...]
    validation_sizes: tuple[int, ...]
    warnings: tuple[str, ...] = ()
    expansion: InputExpansion | None = None

    def load(
        self, chunk: int, part: str = "train"
    ) -> tuple[torch.Tensor | FeatureRows, torch.Tensor]:
        """Features (N, F) and targets int64 (N,) of ``part`` of chunk ``chunk``: with an
        ``expansion`` (bins), compact :class:`FeatureRows`, else a float32 tensor."""
        stem = self.directory / f"{part}_{chunk}"
        features = torch.from_numpy(np.load(stem.with_suffix(".features.npy")))
        targets = torch.from_numpy(np.load(stem.with_suffix(".targets.npy")))
        if self.expansion is None:
            return features, targets
        raw = torch.from_numpy(np.load(stem.with_suffix(".raw.npy")))
        return FeatureRows(features, raw, self.expansion), targets

    def load_rows(
        self, chunks: Sequence[int], part: str = "train"
    ) -> tuple[torch.Tensor | FeatureRows, torch.Tensor]:
        """The rows of ``part`` of ``chunks`` one after the other: features (N, F) as
        :meth:`load` and targets int64 (N,), each chunk copied from its files (mapped, not
        loaded) into one array each, so that memory holds the result and nothing more."""
        sizes = self.train_sizes if part == "train" else self.validation_sizes
        total = sum(sizes[chunk] for chunk in chunks)
        suffixes = (".features.npy", ".targets.npy", *((".raw.npy",) if self.expansion else ()))
        arrays: list[np.ndarray] = []
        start = 0
        for chunk in chunks:
            stem = self.directory / f"{part}_{chunk}"
            stored = [np.load(stem.with_suffix(suffix), mmap_mode="r") for suffix in suffixes]
            if not arrays:
                arrays = [np.empty((total, *array.shape[1:]), array.dtype) for array in stored]
            stop = start + stored[0].shape[0]
            for array, values in zip(arrays, stored, strict=True):
                array[start:stop] = values
            del stored
            start = stop
        if not arrays:
            return torch.empty((0, 0), dtype=torch.float32), torch.empty(0, dtype=torch.int64)
        features, targets = torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1])
        if self.expansion is None:
            return features, targets
        return FeatureRows(features, torch.from_numpy(arrays[2]), self.expansion), targets


def prepare_chunks(
    source: TableSource,
    recipe: Recipe,
    directory: Path,
    owned: Sequence[int] | None,
    *,
    validation_fraction: float,
    seed: int,
    unknown: str = "ignore",
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[int, int], dict[int, int], tuple[str, ...]]:
    """Prepare the chunks in ``owned`` (None: all) into ``directory`` (``progress``: called
    with the row count of each chunk prepared).

    Returns:
        ``(train_sizes, validation_sizes, warnings)``: per chunk prepared, its training and
        validation row counts; the warnings of preparing them, each once.

    Raises:
        DataError: a cell of a chunk cannot be read by the recipe (the message names the row in
            the table), or under ``unknown="error"`` a category the recipe never saw.
    """
    train_sizes, validation_sizes, warnings = {}, {}, {}
    for chunk, frame in source.read(owned):
        try:
            prepared = recipe.prepare(frame, unknown=unknown, allow_no_rows=True, compact=True)
        except DataError as error:
            raise DataError(f"{_where(source, chunk)}: {error}") from error
        rows = chunk.start + prepared.rows.numpy()
        held_out = torch.from_numpy(validation_mask(rows, validation_fraction, seed))
        for part, mask in (("train", ~held_out), ("validation", held_out)):
            stem = directory / f"{part}_{chunk.index}"
            features = take_rows(prepared.features, mask)
            if isinstance(features, FeatureRows):  # bins: compact columns and binned values
                np.save(stem.with_suffix(".raw.npy"), features.raw.numpy())
                features = features.compact
            np.save(stem.with_suffix(".features.npy"), features.numpy())
            np.save(stem.with_suffix(".targets.npy"), prepared.targets[mask].numpy())
        train_sizes[chunk.index] = int((~held_out).sum())
        validation_sizes[chunk.index] = int(held_out.sum())
        for warning in prepared.warnings:
            warnings.setdefault(f"{_where(source, chunk)}: {warning}", None)
        if progress is not None:
            progress(chunk.n_rows)
    return train_sizes, validation_sizes, tuple(warnings)


def _where(source: TableSource, chunk: SourceChunk) -> str:
    """Where a chunk sits in the table, for messages (row numbers inside are the chunk's)."""
    return (
        f"{source.path}, rows {chunk.start + 1}-{chunk.start + chunk.n_rows} "
        f"(row numbers below count from row {chunk.start + 1})"
    )
