"""Preparing a table for training: a stratified split and the recipe fitted on the training rows.

:func:`prepare_table` turns a table into training and validation tensors (the recipe is fitted on
the training rows only, so validation rows never leak into the normalisation).
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from softclass.data.checks import check_has_columns
from softclass.data.column_types import TEXT, ColumnType, TypingOptions, read_column
from softclass.data.expansion import (
    FeatureRows,
    InputExpansion,
    binned_features,
    compact_features,
)
from softclass.data.features import (
    Feature,
    NumericFeature,
    encoded_rows,
    encoder_sources,
    feature_inputs,
    unknown_counts,
    unusable_message,
    unusable_numbers,
)
from softclass.data.missing import (
    INDICATOR_PART,
    check_labelled,
    complete_rows,
    dropped_rows_warning,
    unlabelled_warning,
)
from softclass.data.prepared import unknown_categories_warning
from softclass.data.reading import RawTable, hand_back, read_raw
from softclass.data.recipe import Recipe, typed_table
from softclass.data.split import stratified_split
from softclass.data.target import as_target_type, class_indices, class_labels, sorted_classes
from softclass.data.typing_table import left_out_columns, type_target, typed_candidates
from softclass.errors import ConfigError, DataError
from softclass.limits import DEFAULT_LIMITS, ReadLimits

_GROUP_OUTPUTS = 64  # output columns encoded together (a 256-byte run of each matrix row)
_GATHER_BLOCK_VALUES = 1 << 20  # binned values gathered per block of rows (8 MiB)
_GATHER_COLUMNS = 4  # binned numbers gathered together (their imputed values made together)


@dataclass(frozen=True)
class PreparedData:
    """Training and validation tensors of one table, and the recipe that made them.

    Attributes:
        train_features: float32 (N, F), or with bins :class:`FeatureRows` (compact features,
            expanded where the rows are used); train_targets: int64 (N,).
        validation_features: as train_features, (M, F), or None; validation_targets: int64
            (M,) or None.
        class_names: C names, index order.
        recipe: the preprocessing (fitted on the training rows), or None for raw tensors.
        warnings: what the user should hear (ignored columns, dropped rows).
        validation_source: the validation rows of the input table as read (every column, cells
            as in the file), for the report to show; None for tensors built in code.
        validation_rows: int64 (M,) 0-based position of each validation row in the input table.
    """

    train_features: torch.Tensor | FeatureRows
    train_targets: torch.Tensor
    validation_features: torch.Tensor | FeatureRows | None
    validation_targets: torch.Tensor | None
    class_names: tuple[str, ...]
    recipe: Recipe | None = None
    warnings: tuple[str, ...] = ()
    validation_source: pl.DataFrame | None = None
    validation_rows: torch.Tensor | None = None

    @property
    def n_features(self) -> int:
        return int(self.train_features.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def prepare_table(
    table: pl.DataFrame | RawTable,
    target: str | None = None,
    *,
    normalization: str = "zscore",
    divisors: dict[str, float] | None = None,
    missing: str = "impute",
    bins: int = 0,
    validation_fraction: float = 0.2,
    seed: int = 0,
    keep: Sequence[str] = (),
    drop: Sequence[str] = (),
    ids: Sequence[str] = (),
    typing: TypingOptions | None = None,
    unknown: str = "ignore",
    source: str = "the table",
) -> PreparedData:
    """Split a table (stratified by class) and fit the recipe on its training rows.

    The cells are typed once (:func:`softclass.data.recipe.typed_table`); the recipe's typing
    table and notes describe the whole table.

    Args:
        table: the data, from :func:`softclass.data.read_table` (raw or typed), or a
            :class:`~softclass.data.reading.RawTable` (released once typed and split).
        target: the class column (default: the last column).
        normalization, divisors, missing, bins, keep, drop, ids, typing: as
            :meth:`softclass.data.Recipe.fit`.
        validation_fraction: share of each class held out; 0 for no validation rows.
        seed: seed of the split.
        unknown: categories of validation rows not seen in the training rows: "ignore" (all
            zeros, with a warning) or "error" (``--unknown``).
        source: where the table came from (a file name), for messages.

    Raises:
        DataError, ConfigError: as :meth:`Recipe.fit` and :func:`stratified_split`; DataError
            when no row is left for validation (every class has a single row).
    """
    options = {
        "normalization": normalization,
        "divisors": divisors,
        "missing": missing,
        "bins": bins,
        "ids": ids,
        "typing": typing,
        "keep": keep,
        "drop": drop,
    }
    split = {"validation_fraction": validation_fraction, "seed": seed, "unknown": unknown}
    return _prepared(table, target, options, split, source)


def prepare_file(
    path: str | Path,
    target: str | None = None,
    *,
    delimiter: str | None = None,
    limits: ReadLimits = DEFAULT_LIMITS,
    **options: Any,
) -> PreparedData:
    """Read a table file and prepare it: ``prepare_table(read_table(path, raw=True), ...)``
    with the same result, in less memory (Parquet files of several row groups without
    validation rows: statistics summed in another order, equal to float rounding).

    The cells are typed a column at a time as they leave the reader (a CSV's text is never
    held as polars cells, 16 bytes each, beside the typed table), and only the validation
    rows are kept as read (``validation_source``).

    Args:
        path, delimiter, limits: as :func:`softclass.data.read_table` (``typing`` is taken from
            ``options``).
        target, options: as :func:`prepare_table` (``source`` defaults to the path).

    Raises:
        DataError, ConfigError: as :func:`softclass.data.read_table` and :func:`prepare_table`.
    """
    options.setdefault("source", str(path))
    return prepare_table(read_raw(path, delimiter=delimiter, limits=limits), target, **options)


def _prepared(
    table: pl.DataFrame | RawTable, target: str | None, options: dict, split: dict, source: str
) -> PreparedData:
    """:func:`prepare_table`'s work; a :class:`RawTable` is released once its validation rows
    are taken (before the recipe is fitted and the features encoded). Under ``missing="impute"``
    the split needs the target alone: it is drawn first and the validation rows taken as read,
    then each column as read is let go once typed (the same split, rows and errors)."""
    typing, drop, ids = options["typing"], options["drop"], options["ids"]
    early = _split_before_typing(table, target, options, split, source)
    if early is not None:
        table.consume()
    typed, types = typed_table(table, target, drop=drop, ids=ids, typing=typing, source=source)
    if split["validation_fraction"] <= 0:
        _release(table)
        return _prepared_whole(Recipe.fit(typed, target, column_types=types, **options), typed)
    if early is None:
        rows, targets, split_warnings = _rows_to_split(typed, types, target, options)
        train_rows, validation_rows = _drawn(rows, targets, split, table.height)
        del rows, targets
        positions = validation_rows.numpy()
        if isinstance(table, RawTable):
            validation_source = table.rows(positions)
        else:
            validation_source = table[positions]
    else:
        train_rows, validation_rows, split_warnings, validation_source = early
        name = typed.columns[-1] if target is None else target
        _checked_inputs(typed, types, name, options, _labels(typed, types, name, options)[1])
    _release(table)
    parts = (train_rows.numpy(), validation_rows.numpy())
    recipe = Recipe.fit(typed, target, column_types=types, rows=parts[0], **options)
    warnings = tuple(dict.fromkeys((*recipe.notes, *split_warnings)))  # each line once
    targets = recipe.label_indices(typed)
    train_targets, validation_targets = targets[train_rows], targets[validation_rows]
    holder = [typed]  # _encoded_parts drops the typed columns it no longer needs
    del typed, targets
    (train_features, validation_features), unknown_cells = _encoded_parts(
        recipe, holder, parts, split["unknown"]
    )
    if unknown_cells:
        warnings += (f"validation rows: {unknown_categories_warning(unknown_cells)}",)
    return PreparedData(
        train_features,
        train_targets,
        validation_features,
        validation_targets,
        recipe.classes,
        recipe,
        warnings,
        validation_source,
        validation_rows,
    )


def _drawn(
    rows: torch.Tensor, targets: torch.Tensor, split: dict, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and validation rows of a stratified split of ``rows``.

    Raises:
        DataError: no row is left for validation.
    """
    train_positions, validation_positions = stratified_split(
        targets, split["validation_fraction"], split["seed"]
    )
    train_rows, validation_rows = rows[train_positions], rows[validation_positions]
    if validation_rows.numel() == 0:
        raise DataError(
            f"no validation rows: the table has {height} rows; add rows or --validation 0"
        )
    return train_rows, validation_rows


def _split_before_typing(
    table: pl.DataFrame | RawTable, target: str | None, options: dict, split: dict, source: str
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], pl.DataFrame] | None:
    """For a :class:`RawTable` under ``missing="impute"`` with validation rows: the split drawn
    from the target column alone (the rows to split are the labelled ones, whatever the other
    columns hold), the split's warnings and the validation rows as read; None when that does
    not apply or anything fails (then the usual order raises the usual first error)."""
    if not isinstance(table, RawTable) or options["missing"] != "impute":
        return None
    if split["validation_fraction"] <= 0:
        return None
    target = table.columns[-1] if target is None and table.width else target
    if target not in table.columns or target in {*options["drop"], *options["ids"]}:
        return None
    typing = options["typing"] or TypingOptions()
    try:
        column_type, column = type_target(table.get_column(target), source, typing)
        target_frame = pl.DataFrame([column])
        target_column, labels = _labels(target_frame, (column_type,), target, options)
        check_labelled(labels)
        rows, targets, warnings = _labelled_rows(target_frame, target, target_column, labels)
        train_rows, validation_rows = _drawn(rows, targets, split, table.height)
    except (DataError, ConfigError):
        return None
    del column, target_frame, target_column, labels, rows, targets  # before the rows
    return train_rows, validation_rows, warnings, table.rows(validation_rows.numpy())


def _release(table: pl.DataFrame | RawTable) -> None:
    if isinstance(table, RawTable):
        table.release()


def _prepared_whole(recipe: Recipe, typed: pl.DataFrame) -> PreparedData:
    """Every row of ``typed`` encoded as training rows (no validation rows)."""
    prepared = recipe.prepare(typed, compact=True)
    warnings = tuple(dict.fromkeys((*recipe.notes, *prepared.warnings)))  # each line once
    return PreparedData(
        prepared.features, prepared.targets, None, None, recipe.classes, recipe, warnings
    )


def _encoded_parts(
    recipe: Recipe, typed: list[pl.DataFrame], parts: tuple[np.ndarray, ...], unknown: str
) -> tuple[list[torch.Tensor | FeatureRows], dict[str, int]]:
    """The features of each part (int64 rows of ``typed``'s one table, which is taken out of the
    list so that its columns can be released early; rows each labelled and complete),
    encoded from the typed columns without copying a part's rows first, and the cells of the
    last part (the validation rows) whose category training did not see. With bins, each part
    is :class:`FeatureRows` (compact features and binned values; a binned number's scaled value
    and bins are made where the rows are used), else a float32 (N, F) tensor.

    Raises:
        DataError: under ``unknown="error"``, a category of the last part not seen in training.
    """
    inputs, _ = recipe.read_inputs(  # the caller's table released; 1-byte indicators
        typed.pop(), skip=False, typed=True, indicators=pl.UInt8
    )
    expansion = InputExpansion.of(recipe.features)
    features = recipe.features if expansion is None else compact_features(recipe.features)
    width = sum(len(feature.output_names) for feature in features)
    ready = _early_sources(features, inputs, unknown)
    raws = _binned_first(recipe.features if expansion else (), inputs, parts)
    hand_back()  # malloc's free pages returned before the compact rows are written
    matrices = [torch.empty((len(part), width), dtype=torch.float32) for part in parts]
    counts: dict[str, int] = {}
    start = 0
    for group in _feature_groups(features):
        sources, unseen = _group_sources(group, inputs, ready)
        counts |= unknown_counts(group, inputs, unseen, parts[-1], None, unknown)
        stop = start + sum(len(feature.output_names) for feature in group)
        for matrix, part in zip(matrices, parts, strict=True):
            encoded_rows(sources, len(part), stop - start, part, matrix[:, start:stop])
        start = stop
        del sources, unseen  # before the next group's values are made
    if expansion is None:
        return matrices, counts
    lazy = [
        FeatureRows(matrix, torch.from_numpy(raw), expansion)
        for matrix, raw in zip(matrices, raws, strict=True)
    ]
    return lazy, counts


def _early_sources(
    features: Sequence[Feature], inputs: dict[str, pl.Series], unknown: str
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The encoder sources of the inputs that cannot fail, made before the binned values are
    gathered and their series dropped from ``inputs`` (polars' allocator hands the pages back
    while the binned values are gathered, before the compact rows are written): a missing
    indicator's 0/1 (read as uint8: one byte a row instead of eight; :func:`encoded_rows`
    computes in float64 from it, the same values) and, under ``unknown="ignore"``, a
    category's indices and unseen cells (:func:`encoder_sources`'; ``"error"`` keeps the text
    to name the cell)."""
    ready: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for feature in features:
        column = inputs.get(feature.name)
        if column is None:
            continue
        if isinstance(feature, NumericFeature):
            if feature.part != INDICATOR_PART or column.dtype != pl.UInt8 or column.null_count():
                continue
            ready[feature.name] = (column.to_numpy().astype(np.uint8), None)
        elif unknown == "error":
            continue
        else:
            sources, unseen = encoder_sources((feature,), inputs, None)
            ready[feature.name] = (sources[0][1], unseen.get(feature.name))
        del inputs[feature.name]
    return ready


def _group_sources(
    group: Sequence[Feature],
    inputs: dict[str, pl.Series],
    ready: dict[str, tuple[np.ndarray, np.ndarray | None]],
) -> tuple[list[tuple[Feature, np.ndarray]], dict[str, np.ndarray]]:
    """:func:`encoder_sources` of a group, taking (and dropping) the sources made early."""
    rest = [feature for feature in group if feature.name not in ready]
    made, unseen = encoder_sources(rest, inputs, None)
    values = {feature.name: source for feature, source in made}
    sources: list[tuple[Feature, np.ndarray]] = []
    for feature in group:
        if feature.name in ready:
            values[feature.name], cells = ready.pop(feature.name)
            if cells is not None:
                unseen[feature.name] = cells
        sources.append((feature, values[feature.name]))
    return sources, unseen


def _binned_first(
    features: Sequence[Feature], inputs: dict[str, pl.Series], parts: tuple[np.ndarray, ...]
) -> list[np.ndarray]:
    """Each part's float64 (N, K) binned values (column k: the k-th binned number), written
    before any compact feature; the binned numbers' inputs are dropped from ``inputs`` as they
    are read. Each number is gathered into a column of a (K, N) scratch of its own pages (the
    scratch grows as the typed columns are freed), which is then transposed into the (N, K)
    rows a block of rows at a time, each block's scratch pages handed back once copied: the
    typed numbers, the scratch and the rows never all exist at once."""
    chosen = binned_features(features)
    scratch = [_Scratch(len(chosen), len(part)) for part in parts]
    for k, feature in enumerate(chosen):
        values = _imputed(feature, inputs.pop(feature.name))
        for columns, part in zip(scratch, parts, strict=True):
            np.take(values, part, out=columns.values[k])
        del values  # its pages freed as the next one is gathered
    return [columns.transposed() for columns in scratch]


def _imputed(feature: NumericFeature, column: pl.Series) -> np.ndarray:
    """:func:`encoder_sources`' float64 values of a number (missing cells its fill value), made
    in numpy's memory (handed back when freed; polars' allocator keeps freed pages a while).

    Raises:
        DataError: a number is NaN, infinite or beyond float32's range.
    """
    values = column.cast(pl.Float64).to_numpy()  # missing cells NaN (a copy), else a view
    if column.null_count() and feature.fill_value is not None:
        np.copyto(values, feature.fill_value, where=column.is_null().to_numpy())
    if feature.fill_value is None:
        filled = column
    else:
        filled = pl.Series(column.name, values, nan_to_null=False)
    unusable = unusable_numbers(filled)
    if unusable.any():
        raise DataError(unusable_message(filled, unusable, None))
    return values


class _Scratch:
    """A (K, N) float64 array in an anonymous memory map, transposed into rows while its pages
    are handed back."""

    def __init__(self, n_columns: int, n_rows: int) -> None:
        self._map = mmap.mmap(-1, max(n_columns * n_rows * 8, 1))
        self.values = np.frombuffer(self._map, np.float64, n_columns * n_rows)
        self.values = self.values.reshape(n_columns, n_rows)

    def transposed(self) -> np.ndarray:
        """The (N, K) rows, in row blocks (torch's tiled copy); the scratch is spent."""
        n_columns, n_rows = self.values.shape
        rows = np.empty((n_rows, n_columns), dtype=np.float64)
        target = torch.from_numpy(rows)
        block = max(1, _GATHER_BLOCK_VALUES // max(n_columns, 1))
        done = 0  # rows whose scratch pages are handed back
        for start in range(0, n_rows, block):
            stop = min(start + block, n_rows)
            target[start:stop].copy_(torch.from_numpy(self.values[:, start:stop]).t())
            done = self._hand_back(done, stop)
        del target
        self.values = None
        self._map.close()
        return rows

    def _hand_back(self, done: int, stop: int) -> int:
        """Release the whole pages of rows ``done:stop`` of every column; the rows released."""
        n_columns, n_rows = self.values.shape
        if not hasattr(mmap, "MADV_DONTNEED"):
            return stop
        page = mmap.PAGESIZE
        for column in range(n_columns):
            low = -(-(column * n_rows + done) * 8 // page) * page
            high = (column * n_rows + stop) * 8 // page * page
            if high > low:
                self._map.madvise(mmap.MADV_DONTNEED, low, high - low)
        return stop


def _feature_groups(features: Sequence[Feature]) -> list[tuple[Feature, ...]]:
    """Consecutive features in groups of about :data:`_GROUP_OUTPUTS` output columns.

    A group's imputed values exist only while its columns are written (all of them at once
    held about the typed table again), and each row of a group is still written as one
    contiguous run of the matrix (a feature at a time strided through it: 1.8x the time).
    """
    groups: list[tuple[Feature, ...]] = []
    group: list[Feature] = []
    size = 0
    for feature in features:
        group.append(feature)
        size += len(feature.output_names)
        if size >= _GROUP_OUTPUTS:
            groups.append(tuple(group))
            group, size = [], 0
    return [*groups, tuple(group)] if group else groups


def _labels(
    typed: pl.DataFrame, types: tuple[ColumnType, ...], target: str | None, options: dict
) -> tuple[pl.Series, pl.Series]:
    """The target column read as the recipe reads it, and its class labels (null: none)."""
    typing = options["typing"] or TypingOptions()
    known = {column_type.name: column_type for column_type in types}
    target_type = as_target_type(known.get(target) or ColumnType(target, TEXT))
    target_column, _ = read_column(typed.get_column(target), target_type, typing.missing_markers)
    return target_column, class_labels(target_column)


def _rows_to_split(
    typed: pl.DataFrame, types: tuple[ColumnType, ...], target: str | None, options: dict
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """The rows a split draws from and their class indices (classes in the recipe's order),
    with the warnings about the rows left out: rows without a class, and under
    ``missing="drop"`` rows with a missing value in a feature column (as :meth:`Recipe.fit`
    leaves its columns out: ID-like or empty ones are not feature columns).

    Raises:
        DataError: as :meth:`Recipe.fit` for the target, and for a missing value under
            ``missing="error"``.
    """
    target = typed.columns[-1] if target is None and typed.width else target
    check_has_columns(typed, [target], "the target")
    target_column, labels = _labels(typed, types, target, options)
    check_labelled(labels)
    kept = _checked_inputs(typed, types, target, options, labels)
    return _labelled_rows(typed, target, target_column, labels, kept)


def _checked_inputs(
    typed: pl.DataFrame,
    types: tuple[ColumnType, ...],
    target: str,
    options: dict,
    labels: pl.Series,
) -> pl.Series | None:
    """The rows the missing policy keeps (None: all), after checking every feature input's
    numbers on the rows kept (so that errors name the file's row).

    Raises:
        DataError: NaN, infinite or out-of-range numbers; a missing value under "error".
    """
    typing = options["typing"] or TypingOptions()
    known = {column_type.name: column_type for column_type in types}
    skipped = {target, *options["drop"], *options["ids"]}
    candidates = [name for name in typed.columns if name not in skipped]
    column_types, columns = typed_candidates(typed, candidates, known, typing)
    labelled = labels.is_not_null()
    left_out = left_out_columns(columns, column_types, options["keep"], labelled)
    used = {name: column for name, column in columns.items() if name not in left_out}
    inputs = feature_inputs(used, column_types)[0]
    kept = complete_rows(inputs, labelled, options["missing"])
    for column in inputs.values():
        if column.dtype.is_numeric() and (bad := unusable_numbers(column)).any():
            bad = bad & (labelled if kept is None else kept)
            if bad.any():
                raise DataError(unusable_message(column, bad, None))
    return kept


def _labelled_rows(
    typed: pl.DataFrame,
    target: str,
    target_column: pl.Series,
    labels: pl.Series,
    kept: pl.Series | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """The rows to split (those ``kept``; default: the labelled ones), their class indices and
    the warnings about the rows left out."""
    if kept is None and labels.null_count():  # "impute": the labelled rows
        kept = labels.is_not_null()
    labelled = labels.is_not_null()
    warnings = []
    if labels.null_count():
        warnings.append(unlabelled_warning(labels.is_null().arg_true(), target))
    if kept is not None and (dropped := kept.not_() & labelled).any():
        warnings.append(dropped_rows_warning(dropped.arg_true()))
    rows = torch.arange(typed.height, dtype=torch.int64)
    if kept is not None:
        rows = rows[torch.from_numpy(kept.to_numpy())]
        labels = labels.filter(kept)
    classes, _ = sorted_classes(target_column, labels)
    return rows, class_indices(labels, classes, kept), tuple(warnings)
