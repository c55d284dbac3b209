"""Preparing a table for training: a stratified split and the recipe fitted on the training rows.

:func:`prepare_table` turns a table into training and validation tensors (the recipe is fitted on
the training rows only, so validation rows never leak into the normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import torch

from softclass.data.column_types import TypingOptions
from softclass.data.prepared import PreparedTable
from softclass.data.recipe import Recipe, typed_table
from softclass.data.split import stratified_split
from softclass.errors import DataError


@dataclass(frozen=True)
class PreparedData:
    """Training and validation tensors of one table, and the recipe that made them.

    Attributes:
        train_features: float32 (N, F); train_targets: int64 (N,).
        validation_features: float32 (M, F) or None; validation_targets: int64 (M,) or None.
        class_names: C names, index order.
        recipe: the preprocessing (fitted on the training rows), or None for raw tensors.
        warnings: what the user should hear (ignored columns, dropped rows).
        validation_source: the validation rows of the input table as read (every column, cells
            as in the file), for the report to show; None for tensors built in code.
        validation_rows: int64 (M,) 0-based position of each validation row in the input table.
    """

    train_features: torch.Tensor
    train_targets: torch.Tensor
    validation_features: torch.Tensor | None
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
    table: pl.DataFrame,
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
        table: the data, from :func:`softclass.data.read_table` (raw or typed).
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
    }
    typed, types = typed_table(table, target, drop=drop, ids=ids, typing=typing, source=source)
    split = validation_fraction > 0
    whole, prepared = _fit_whole(typed, target, types, keep, drop, options, split)
    warnings = tuple(dict.fromkeys((*whole.notes, *prepared.warnings)))  # each line once
    if not split:
        return PreparedData(
            prepared.features, prepared.targets, None, None, whole.classes, whole, warnings
        )
    train_positions, validation_positions = stratified_split(
        prepared.targets, validation_fraction, seed
    )
    train_rows = prepared.rows[train_positions]
    validation_rows = prepared.rows[validation_positions]
    if validation_rows.numel() == 0:
        raise DataError(
            f"no validation rows: the table has {table.height} rows; add rows or --validation 0"
        )
    train_table, validation_table = typed[train_rows.numpy()], typed[validation_rows.numpy()]
    del typed, prepared  # each row is in one of the two tables now
    recipe = _refit(whole, train_table, types, drop, options)
    trained = recipe.prepare(train_table)
    del train_table
    validated = recipe.prepare(validation_table, unknown=unknown)
    validation_rows = validation_rows[validated.rows]  # less the rows prepare dropped
    return PreparedData(
        trained.features,
        trained.targets,
        validated.features,
        validated.targets,
        recipe.classes,
        recipe,
        (*warnings, *(f"validation rows: {warning}" for warning in validated.warnings)),
        table[validation_rows.numpy()],
        validation_rows,
    )


def _fit_whole(
    typed: pl.DataFrame,
    target: str | None,
    types: tuple,
    keep: Sequence[str],
    drop: Sequence[str],
    options: dict,
    split: bool,
) -> tuple[Recipe, PreparedTable]:
    """The whole table's recipe and its prepared rows. Before a split (``split``) the recipe
    gives only the typing table, the ID-like columns, the classes and the rows to split (the
    training rows' recipe is refitted): it is fitted without bins and encodes no features."""
    fitted = {**options, "bins": 0} if split else options
    whole = Recipe.fit(typed, target, keep=keep, drop=drop, column_types=types, **fitted)
    return whole, whole.prepare(typed, features=not split)


def _refit(
    whole: Recipe,
    train_table: pl.DataFrame,
    types: dict,
    drop: Sequence[str],
    options: dict,
) -> Recipe:
    """The recipe fitted on the training rows alone, with the whole table's typing table.

    Every class keeps at least one training row (stratified_split), so the classes match; the
    columns the whole table dropped as ID-like stay dropped.
    """
    return Recipe.fit(
        train_table,
        whole.target,
        keep=whole.source_columns,
        drop=[*drop, *(name for name in whole.dropped_columns if name not in drop)],
        column_types=types,
        **options,
    ).with_typing_table_of(whole)
