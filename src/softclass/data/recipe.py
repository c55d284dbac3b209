"""The preprocessing recipe: what was learned from the training table, saved beside the model.

A :class:`Recipe` is fitted once on the training table and then turns any table with the same
columns into tensors exactly the same way — at training, evaluation and prediction time, and
after a save/load round trip. Raw text cells are read by the :class:`ColumnType` recorded at
fitting (decimal mark, date format, missing markers), so a prediction table is never re-guessed.

* **Columns** (:attr:`Recipe.columns`, the typing table every run shows): each column of the
  training table has a kind (number, boolean, date, text — :mod:`softclass.data.column_types`)
  and a role: ``"target"``; ``"feature"``; ``"id"`` (``--id COL``: not a feature, carried into
  predictions); or ``"dropped"`` (``--drop COL``, or ID-like: a text column whose distinct values
  exceed :data:`ID_FRACTION` of its rows, or an integer column with a distinct value per row that
  counts up by one or is named like an id — unless ``--keep COL``; tables under
  :data:`ID_MIN_ROWS` rows keep every column).
* **Features**: the feature columns in table order. A number or boolean (1/0) column becomes one
  output value ``(value - offset) / scale``; a date column three (``col.year``, ``col.month``,
  ``col.day_of_week`` with Monday = 1), scaled the same way; a text column one 0/1 output per
  category seen in training (one-hot, categories sorted), named ``column=category``.
* **Normalization** of numeric outputs: ``"zscore"`` (offset = mean, scale = population standard
  deviation), ``"minmax"`` (offset = minimum, scale = maximum - minimum) or ``"divide"`` (offset =
  0, scale = a constant given per number column, e.g. the seed's age/100, income/100000,
  weight/1000; boolean and date outputs are z-scored). A constant output under zscore/minmax has
  scale 1, so it becomes all zeros on the training data instead of dividing by zero.
* **Classes**: the distinct target values in sorted order (numeric targets by value, written
  without a trailing ``.0``); class index ``i`` is ``classes[i]``. A numeric target with more than
  :data:`MAX_NUMERIC_CLASSES` distinct values that are also more than
  :data:`CONTINUOUS_FRACTION` of its rows looks continuous and is refused.
* **Missing values**: ``missing="error"`` (default) raises naming the first rows and columns;
  ``"drop"`` fits on complete rows, and :meth:`Recipe.prepare` drops incomplete rows later
  (reporting them); ``"impute"`` fills numeric outputs with the training mean and categorical
  cells with the most frequent training category (ties: the first in sorted order). A missing
  target is never imputed: it is an error, or the row is dropped under "drop".
* NaN, infinite and out-of-float32-range feature values are an error naming the row and column.
* **Unknown categories** at transform time: ``unknown="ignore"`` (default) encodes them as all
  zeros and :meth:`Recipe.prepare` warns with the count per column; ``"error"`` raises.
* **Bad rows** at prepare time: ``on_error="error"`` (default) raises on the first cell that
  cannot be read or used; ``"skip"`` leaves those rows out and reports each with its reason.
* At prediction time missing feature columns are an error naming them; columns the recipe does
  not use are ignored, and :meth:`Recipe.prepare` reports them in its ``warnings``; the target
  column may be absent (``use_target=False`` ignores it).

Saved as JSON (:meth:`Recipe.save` / :meth:`Recipe.load`) with a format name and version
(:data:`RECIPE_VERSION`; version 1 files still load); loading only reads and checks data, it
never executes anything.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import torch

from softclass.data.column_types import (
    BOOLEAN,
    BOOLEAN_PAIRS,
    DATE,
    DECIMAL_MARKS,
    FLOAT32_MAX,
    KINDS,
    MISSING_MARKERS,
    NUMBER,
    TEXT,
    ColumnType,
    TypingOptions,
    infer_column_type,
    read_column,
    type_column,
)
from softclass.data.messages import (
    ROW_NUMBERING,
    cell_list,
    clip,
    did_you_mean,
    quoted_names,
    row_list,
    row_number,
)
from softclass.errors import ConfigError, DataError, ModelFileError
from softclass.io import atomic_write_json

NORMALIZATIONS = ("zscore", "minmax", "divide")
MISSING_POLICIES = ("error", "drop", "impute")
UNKNOWN_POLICIES = ("ignore", "error")
ERROR_POLICIES = ("error", "skip")
ROLES = ("target", "feature", "id", "dropped")
DATE_PARTS = ("year", "month", "day_of_week")
"""The numeric features a date column becomes (``col.year`` …; day of week: Monday = 1)."""

RECIPE_FORMAT = "softclass-recipe"
RECIPE_VERSION = 2
"""Version 2 added the column typing table, id columns, missing markers and date features."""

ID_FRACTION = 0.5
"""A text column with more distinct values than this share of its rows is ID-like (dropped)."""
ID_MIN_ROWS = 20
"""Tables with fewer rows drop no column as ID-like."""
MAX_NUMERIC_CLASSES = 20
"""A numeric target with more distinct values than this (and than CONTINUOUS_FRACTION of the
rows) looks continuous."""
CONTINUOUS_FRACTION = 0.05

EXACT_DISTINCT_ROWS = 100_000
"""Number and date columns longer than this have their distinct count in the typing table
estimated (HyperLogLog, polars ``approx_n_unique``): five times faster than counting."""
_ENCODE_BLOCK_VALUES = 1 << 22  # feature values per block of rows being encoded (16 MiB)
_ROW_BY_ROW_CATEGORIES = 64  # up to this many categories, one-hot rows are written one by one
_ID_NAME = re.compile(r"(?i)^(id|key|index|idx|row|uuid)$|(^|[_\s.-])(id|key|idx)$|^id[_\s.-]")
_OPTIONS = {  # the CLI flag of each option, for messages
    "normalization": "--normalize",
    "missing": "--missing",
    "unknown": "--unknown",
    "on_error": "--on-error",
}


@dataclass(frozen=True)
class NumericFeature:
    """A numeric output, ``(value - offset) / scale``.

    ``column`` is the table column it comes from (None: the column called ``name``) and ``part``
    the date part for a date column (None otherwise). ``fill_value`` replaces missing values
    under ``missing="impute"`` (else None); ``mean``, ``std``, ``minimum`` and ``maximum`` are the
    training statistics of the raw value.
    """

    name: str
    offset: float
    scale: float
    fill_value: float | None
    mean: float
    std: float
    minimum: float
    maximum: float
    column: str | None = None
    part: str | None = None
    kind: ClassVar[str] = "numeric"

    @property
    def output_names(self) -> tuple[str, ...]:
        """The names of the output columns this feature produces: just its own name."""
        return (self.name,)

    @property
    def source(self) -> str:
        """The table column this feature is read from."""
        return self.column or self.name


@dataclass(frozen=True)
class CategoricalFeature:
    """A categorical input column, one-hot encoded over the sorted ``categories`` seen in training.

    ``counts[i]`` is how often ``categories[i]`` occurred in training; ``fill_value`` replaces
    missing cells under ``missing="impute"`` (else None).
    """

    name: str
    categories: tuple[str, ...]
    counts: tuple[int, ...]
    fill_value: str | None
    kind: ClassVar[str] = "categorical"

    @property
    def output_names(self) -> tuple[str, ...]:
        """``column=category`` for each category, in the order of the one-hot outputs."""
        return tuple(f"{self.name}={category}" for category in self.categories)

    @property
    def source(self) -> str:
        """The table column this feature is read from."""
        return self.name


Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True)
class ColumnInfo:
    """One row of the typing table: a training column, its type, role and statistics.

    Attributes:
        type: how the column's cells are read (:class:`ColumnType`).
        role: one of :data:`ROLES`.
        action: what is done with it, in words ("scaled (zscore)", "one-hot, 3 categories",
            "dropped: ID-like, 5000 distinct values in 5000 rows", …).
        n_missing: missing cells in the training table.
        n_distinct: distinct present values in the training table (estimated for number and
            date columns longer than :data:`EXACT_DISTINCT_ROWS` rows).
    """

    type: ColumnType
    role: str
    action: str
    n_missing: int
    n_distinct: int

    @property
    def name(self) -> str:
        return self.type.name

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: name, kind, role, action, counts and how the cells are read."""
        return {
            "name": self.name,
            "kind": self.type.kind,
            "role": self.role,
            "action": self.action,
            "n_missing": self.n_missing,
            "n_distinct": self.n_distinct,
            "decimal": self.type.decimal,
            "date_format": self.type.date_format,
            "boolean_texts": list(self.type.boolean_texts),
            "note": self.type.note,
        }


@dataclass(frozen=True)
class PreparedTable:
    """A table turned into tensors by :meth:`Recipe.prepare`.

    Attributes:
        features: float32 (N, F) encoded features of the kept rows.
        targets: int64 (N,) class indices, or None when the target column is absent or ignored.
        rows: int64 (N,) 0-based position in the input table of each kept row.
        warnings: what the user should hear about: ignored columns, dropped and skipped rows,
            unknown categories.
        skipped: ``(0-based row, reason)`` of each row left out under ``on_error="skip"``.
        unknown_categories: per column, the number of cells with a category not seen in
            training (encoded as all zeros under ``unknown="ignore"``).
    """

    features: torch.Tensor
    targets: torch.Tensor | None
    rows: torch.Tensor
    warnings: tuple[str, ...]
    skipped: tuple[tuple[int, str], ...] = ()
    unknown_categories: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """What was learned from a training table; see the module docstring for the rules.

    Attributes:
        target: name of the target column.
        classes: class names in index order (sorted).
        class_counts: training rows per class, aligned with ``classes``.
        features: the numeric and categorical outputs, in table order.
        normalization: "zscore", "minmax" or "divide".
        missing: "error", "drop" or "impute".
        n_rows: training rows the recipe was fitted on (after dropping incomplete rows).
        columns: the typing table (every training column); empty for a version-1 recipe.
        id_columns: columns carried into predictions (``--id``).
        missing_markers: cell texts read as missing.
        notes: what fitting wants the user to know (dropped ID-like columns, the target
            chosen by default, classes with one row…); not saved.
    """

    target: str
    classes: tuple[str, ...]
    class_counts: tuple[int, ...]
    features: tuple[Feature, ...]
    normalization: str
    missing: str
    n_rows: int
    columns: tuple[ColumnInfo, ...] = ()
    id_columns: tuple[str, ...] = ()
    missing_markers: tuple[str, ...] = MISSING_MARKERS
    notes: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def fit(
        cls,
        table: pl.DataFrame,
        target: str | None = None,
        *,
        normalization: str = "zscore",
        divisors: Mapping[str, float] | None = None,
        missing: str = "error",
        keep: Sequence[str] = (),
        drop: Sequence[str] = (),
        ids: Sequence[str] = (),
        typing: TypingOptions | None = None,
        column_types: Sequence[ColumnType] | None = None,
    ) -> Recipe:
        """Learn a recipe from a training table.

        Args:
            table: the training table: raw text (``read_table(..., raw=True)``), typed
                (:func:`softclass.data.read_table`) or any polars DataFrame.
            target: name of the target column; default the last column.
            normalization: "zscore" (default), "minmax" or "divide" (``--normalize``).
            divisors: with normalization="divide", the constant for every number feature
                column, e.g. ``{"age": 100, "income": 100_000, "weight": 1000}`` (``--divide``).
            missing: "error" (default), "drop" or "impute" (``--missing``).
            keep: columns kept as features even when ID-like (``--keep``).
            drop: columns left out (``--drop``).
            ids: columns carried into predictions, not features (``--id``).
            typing: decimal mark and extra missing markers (``--decimal``, ``--na-values``).
            column_types: the column types from :func:`typed_table` (with the same options)
                when ``table`` is its typed table: cells already typed are not read again;
                default: inferred here.

        Raises:
            ConfigError: an unknown normalization or missing policy, or divisors that do not
                match the number feature columns.
            DataError: unknown target or named column, no feature column, a cell its column's
                type cannot read, missing values under "error", a missing target under
                "impute", NaN/inf/out-of-range features, fewer than two classes, a target that
                looks continuous, or no rows left.
        """
        _check_choice("normalization", normalization, NORMALIZATIONS)
        _check_choice("missing", missing, MISSING_POLICIES)
        typing = typing or TypingOptions()
        default_target = target is None
        target = table.columns[-1] if target is None and table.width else target
        _check_has_columns(table, [target], "the target")
        for option, names in (("--keep", keep), ("--drop", drop), ("--id", ids)):
            _check_named_columns(table, names, option, target)
        if table.width < 2:
            raise DataError(
                f"the table has only the target column {clip(repr(target))}; at least one "
                "feature column is needed (if the file uses another delimiter, pass --delimiter)"
            )
        if column_types is None:
            table, column_types = typed_table(table, target, drop=drop, ids=ids, typing=typing)
        known = {column_type.name: column_type for column_type in column_types}
        markers = typing.missing_markers
        target_type = _target_type(known.get(target) or ColumnType(target, TEXT))
        target_column, bad = read_column(table.get_column(target), target_type, markers)
        labels = _class_labels(target_column)

        candidates = [name for name in table.columns if name not in {target, *drop, *ids}]
        types = {
            name: known.get(name) or infer_column_type(table.get_column(name), "the table", typing)
            for name in candidates
        }
        typed: dict[str, pl.Series] = {}
        for name, column_type in types.items():
            column = table.get_column(name)
            if column.dtype == column_type.dtype:
                typed[name] = column  # typed by typed_table: read once
                continue
            typed[name], bad = read_column(column, column_type, markers)
            if bad is not None:
                raise DataError(bad.message("the table"))
        id_like = {
            name: reason
            for name, column in typed.items()
            if name not in keep and (reason := _id_like(column, types[name]))
        }
        inputs, origin = _inputs(
            {name: typed[name] for name in typed if name not in id_like}, types
        )
        if not inputs:
            raise DataError(
                "no feature column is left"
                + (
                    f" (dropped as ID-like: {quoted_names(id_like)}; --keep COL uses one)"
                    if id_like
                    else ""
                )
            )
        scales = _checked_divisors(normalization, divisors, inputs, types)

        keep_rows = _complete_rows(inputs, labels, missing)
        if keep_rows is not None:
            inputs = {name: column.filter(keep_rows) for name, column in inputs.items()}
            labels = labels.filter(keep_rows)
        if labels.len() == 0:
            raise DataError("no rows are left after dropping the rows with missing values")
        for column in inputs.values():
            if column.dtype.is_numeric():
                bad_rows = _unusable_numbers(column)
                if bad_rows.any():
                    raise DataError(_unusable_message(column, bad_rows, keep_rows))
        empty = [name for name, column in inputs.items() if column.null_count() == column.len()]
        if empty:
            raise DataError(
                f"the column(s) {quoted_names(empty)} have no values (every cell is missing); "
                "leave them out with --drop COL"
            )

        classes, class_counts = _sorted_classes(target_column, labels)
        notes = _target_notes(target, target_column, classes, class_counts, default_target)
        features = tuple(
            _fit_numeric(column, normalization, scales, missing, _stored_source(origin[name]))
            if column.dtype.is_numeric()
            else _fit_categorical(column, missing)
            for name, column in inputs.items()
        )
        for name, column_type in types.items():
            if column_type.note:
                notes.append(f"column {clip(repr(name))}: {column_type.note}")
        if id_like:
            notes.append(
                f"dropped ID-like column(s) {quoted_names(id_like)} (one value per row or "
                "nearly); pass --keep COL to use one as a feature"
            )
        columns = _column_table(
            table,
            target,
            target_type,
            target_column,
            classes,
            types,
            typed,
            features,
            id_like,
            drop,
            ids,
            normalization,
            typing,
            markers,
        )
        return cls(
            target=target,
            classes=classes,
            class_counts=class_counts,
            features=features,
            normalization=normalization,
            missing=missing,
            n_rows=labels.len(),
            columns=columns,
            id_columns=tuple(ids),
            missing_markers=tuple(markers),
            notes=tuple(notes),
        )

    def with_typing_table_of(self, whole: Recipe) -> Recipe:
        """This recipe with the typing table and notes of ``whole`` (fitted on the whole table).

        The feature actions (category counts, scales) stay this recipe's own.
        """
        actions = {info.name: info.action for info in self.columns if info.role == "feature"}
        columns = tuple(
            replace(info, action=actions[info.name]) if info.name in actions else info
            for info in whole.columns
        )
        return replace(self, columns=columns, notes=whole.notes)

    @property
    def dropped_columns(self) -> tuple[str, ...]:
        """Training columns left out (``--drop`` or ID-like)."""
        return tuple(info.name for info in self.columns if info.role == "dropped")

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the F output columns of :meth:`transform`, in order."""
        return tuple(name for feature in self.features for name in feature.output_names)

    @property
    def n_features(self) -> int:
        """F, the width of :meth:`transform`'s output."""
        return len(self.feature_names)

    @property
    def n_classes(self) -> int:
        """C, the number of classes."""
        return len(self.classes)

    @property
    def source_columns(self) -> tuple[str, ...]:
        """The table columns the features are read from, in order, each once."""
        return tuple(dict.fromkeys(feature.source for feature in self.features))

    @cached_property
    def _column_types(self) -> dict[str, ColumnType]:
        return {info.name: info.type for info in self.columns}

    def column_type(self, name: str) -> ColumnType:
        """How the training column ``name`` is read (number for a version-1 numeric feature)."""
        if name in self._column_types:
            return self._column_types[name]
        if name == self.target:
            return ColumnType(name, TEXT)
        kinds = {feature.source: feature.kind for feature in self.features}
        return ColumnType(name, NUMBER if kinds.get(name) == "numeric" else TEXT)

    def transform(self, table: pl.DataFrame, *, unknown: str = "ignore") -> torch.Tensor:
        """Encode the feature columns of ``table``: float32 tensor of shape (N, F).

        Columns the recipe does not use (and the target) are ignored. Missing cells are filled
        under ``missing="impute"`` and an error otherwise (use :meth:`prepare` to drop them).
        Unknown categories are all zeros under ``unknown="ignore"`` (:meth:`prepare` counts them).

        Raises:
            DataError: a feature column is absent, a cell cannot be read or is missing (not
                imputed), a numeric value is not finite or outside float32's range, or (under
                ``unknown="error"``) a category was not seen in training.
        """
        _check_choice("unknown", unknown, UNKNOWN_POLICIES)
        inputs, _ = self._read_inputs(table, skip=False)
        self._check_no_missing(inputs)
        features, _ = self._encode(inputs, None, unknown)
        return features

    def encode_targets(self, table: pl.DataFrame) -> torch.Tensor:
        """Class indices of the target column: int64 tensor of shape (N,), in ``classes`` order.

        Raises:
            DataError: the target column is absent, a target is missing, or a class was not seen
                in training.
        """
        return self._class_indices(self._target_labels(table), keep=None)

    def label_indices(self, table: pl.DataFrame) -> torch.Tensor:
        """Class indices of the target column, -1 where the class is missing or unknown.

        For measuring accuracy on a table whose labels may hold classes the model never saw:
        int64 (N,). Raises DataError when the target column is absent.
        """
        labels = self._target_labels(table)
        lookup = {name: position for position, name in enumerate(self.classes)}
        indices = labels.replace_strict(lookup, default=-1, return_dtype=pl.Int64).fill_null(-1)
        return torch.from_numpy(indices.to_numpy().astype(np.int64))

    def decode(self, indices: torch.Tensor | Sequence[int]) -> list[str]:
        """Class names for class indices (a 1-D integer tensor or a sequence of ints)."""
        values = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
        for value in values:
            if not isinstance(value, int) or not 0 <= value < self.n_classes:
                raise DataError(
                    f"class index {value!r} is out of range; this recipe has {self.n_classes} "
                    f"classes, indices 0 to {self.n_classes - 1}"
                )
        return [self.classes[value] for value in values]

    def unused_columns(self, table: pl.DataFrame) -> list[str]:
        """Columns of ``table`` the recipe does not know: not a feature, id, target or dropped."""
        used = {*self.source_columns, self.target, *self.id_columns, *self.dropped_columns}
        return [name for name in table.columns if name not in used]

    def prepare(
        self,
        table: pl.DataFrame,
        *,
        unknown: str = "ignore",
        on_error: str = "error",
        use_target: bool = True,
        source: str = "the table",
    ) -> PreparedTable:
        """Features, targets (when the target column is present and used) and warnings.

        Under ``missing="drop"`` incomplete rows (a missing feature, or a missing target when the
        target is used) are dropped; under ``on_error="skip"`` rows with a cell that cannot be
        read or used (not a number, missing without a policy, not finite, unknown category under
        ``unknown="error"``, unknown or missing class) are left out. ``rows`` says which input
        rows were kept; warnings name the others. Unused columns are ignored with a warning.
        Row numbers in errors refer to ``table`` as given.

        Raises:
            DataError: as :meth:`transform` and :meth:`encode_targets` (under
                ``on_error="error"``), or when every row is skipped.
        """
        _check_choice("unknown", unknown, UNKNOWN_POLICIES)
        _check_choice("on_error", on_error, ERROR_POLICIES)
        skip = on_error == "skip"
        warnings = []
        unused = self.unused_columns(table)
        if unused and (use_target or unused != [self.target]):
            shown = [name for name in unused if use_target or name != self.target]
            warnings.append(f"ignoring column(s) not used by the model: {quoted_names(shown)}")
        inputs, bad = self._read_inputs(table, skip=skip, source=source)
        labels = self._target_labels(table) if use_target and self.target in table.columns else None
        if labels is not None and skip:
            for index in (labels.is_null() | ~labels.is_in(self.classes)).arg_true().to_list():
                value = labels[index]
                bad.setdefault(
                    index,
                    f"column {clip(repr(self.target))}: "
                    + ("no class" if value is None else f"unknown class {clip(repr(value))}"),
                )
        incomplete = pl.repeat(False, table.height, eager=True)
        if self.missing == "drop":
            for column in [*inputs.values(), *([] if labels is None else [labels])]:
                incomplete = incomplete | column.is_null()
            if incomplete.any():
                warnings.append(_dropped_rows_warning(incomplete.arg_true()))
        elif skip and self.missing == "error":
            for name, column in inputs.items():
                for index in column.is_null().arg_true().to_list():
                    bad.setdefault(index, f"column {clip(repr(name))}: missing value")
        if skip:
            for name, column in inputs.items():
                if column.dtype.is_numeric():
                    for index in _unusable_numbers(column).arg_true().to_list():
                        bad.setdefault(
                            index, f"column {clip(repr(name))}: {column[index]!r} is not usable"
                        )
            if unknown == "error":
                for feature in self.features:
                    if isinstance(feature, CategoricalFeature):
                        column = inputs[feature.name]
                        unseen = (~column.is_in(feature.categories)).fill_null(False)
                        for index in unseen.arg_true().to_list():
                            bad.setdefault(
                                index,
                                f"column {clip(repr(feature.name))}: unknown category "
                                f"{clip(repr(column[index]))}",
                            )
        keep = None
        skipped = tuple(sorted(bad.items()))
        if skipped:
            is_bad = pl.Series([False] * table.height)
            is_bad = is_bad.scatter([index for index, _ in skipped], True)
            incomplete = incomplete | is_bad
            warnings.append(_skipped_rows_warning(skipped))
        if incomplete.any():
            keep = ~incomplete
            if not keep.any():
                raise DataError(
                    f"no row is left: all {table.height} rows were "
                    + ("skipped" if skipped else "dropped for missing values")
                )
            inputs = {name: column.filter(keep) for name, column in inputs.items()}
            labels = None if labels is None else labels.filter(keep)
        self._check_no_missing(inputs, keep)
        features, unknown_counts = self._encode(inputs, keep, unknown)
        if unknown_counts:
            warnings.append(_unknown_categories_warning(unknown_counts))
        rows = torch.arange(table.height, dtype=torch.int64)
        return PreparedTable(
            features=features,
            targets=None if labels is None else self._class_indices(labels, keep),
            rows=rows if keep is None else rows[torch.from_numpy(keep.to_numpy())],
            warnings=tuple(warnings),
            skipped=skipped,
            unknown_categories=unknown_counts,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description of the recipe, with its format name and version."""
        return {
            "format": RECIPE_FORMAT,
            "version": RECIPE_VERSION,
            "target": self.target,
            "classes": list(self.classes),
            "class_counts": list(self.class_counts),
            "normalization": self.normalization,
            "missing": self.missing,
            "n_rows": self.n_rows,
            "features": [_feature_to_dict(feature) for feature in self.features],
            "columns": [info.to_dict() for info in self.columns],
            "id_columns": list(self.id_columns),
            "missing_markers": list(self.missing_markers),
        }

    def typing_table(self) -> list[dict[str, Any]]:
        """The typing table as JSON-safe rows (what ``--json`` carries and the CLI prints)."""
        return [info.to_dict() for info in self.columns]

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> Recipe:
        """Rebuild a recipe from :meth:`to_dict`'s output (version 1 or 2), checking every field.

        Raises:
            ModelFileError: a field is missing, has the wrong type or an impossible value, or
                the format version is not one this softclass reads. ``source`` prefixes the
                message.
        """
        return _RecipeReader(source).recipe(data)

    def save(self, path: str | Path) -> Path:
        """Write the recipe as JSON to ``path`` atomically and return the path."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read a recipe written by :meth:`save`.

        Raises:
            ModelFileError: the file is missing, not UTF-8 JSON, or not a valid recipe.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelFileError(f"{path}: no such recipe file") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ModelFileError(f"{path}: cannot be read as a recipe: {error}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelFileError(
                f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                "the recipe file is damaged or incomplete"
            ) from None
        return cls.from_dict(data, source=str(path))

    def _read_inputs(
        self, table: pl.DataFrame, skip: bool, source: str = "the table"
    ) -> tuple[dict[str, pl.Series], dict[int, str]]:
        """The feature inputs of ``table`` read as in training, and (under ``skip``) bad rows.

        Returns:
            ``(inputs, bad)``: one series per feature name (numbers Float64, categories
            String; unreadable cells null) and ``{0-based row: reason}`` for unreadable cells.
        """
        sources = self.source_columns
        _check_has_columns(table, list(sources), "feature")
        typed: dict[str, pl.Series] = {}
        types: dict[str, ColumnType] = {}
        bad: dict[int, str] = {}
        for name in sources:
            types[name] = self.column_type(name)
            typed[name], cells = read_column(
                table.get_column(name), types[name], self.missing_markers
            )
            if cells is None:
                continue
            if not skip:
                hint = "; --on-error skip leaves such rows out" if source != "the table" else ""
                raise DataError(cells.message(source) + hint)
            for index, text in zip(cells.rows.to_list(), cells.texts.to_list(), strict=True):
                bad.setdefault(
                    index, f"column {clip(repr(name))}: {clip(repr(text))} {cells.problem}"
                )
        inputs, _ = _inputs(typed, types)
        return {feature.name: inputs[feature.name] for feature in self.features}, bad

    def _target_labels(self, table: pl.DataFrame) -> pl.Series:
        _check_has_columns(table, [self.target], "the target")
        target_type = self.column_type(self.target)
        column, bad = read_column(table.get_column(self.target), target_type, self.missing_markers)
        if bad is not None:  # a number target with a text cell: a class the model never saw
            text = table.get_column(self.target).cast(pl.String).str.strip_chars()
            return _class_labels(column).zip_with(~_bad_mask(bad, column), text)
        return _class_labels(column)

    def _check_no_missing(
        self, columns: dict[str, pl.Series], keep: pl.Series | None = None
    ) -> None:
        if self.missing == "impute":
            return
        cells, total = _missing_cells(columns)
        if cells:
            cells = [(_source_index(index, keep), name) for index, name in cells]
            hint = (
                "use Recipe.prepare(table), which drops incomplete rows and reports them"
                if self.missing == "drop"
                else "fill them in (the model was trained with --missing error), or pass "
                "--on-error skip to leave those rows out"
            )
            raise DataError(f"missing values: {cell_list(cells, total)}; {hint}")

    def _encode(
        self, columns: dict[str, pl.Series], keep: pl.Series | None, unknown: str
    ) -> tuple[torch.Tensor, dict[str, int]]:
        """Impute, check and encode feature inputs into a float32 (N, F) tensor.

        Returns the tensor and, per categorical column, how many cells held a category not seen
        in training (all zeros). ``keep`` (when rows were dropped) maps positions back to the
        caller's table for errors.
        """
        n_rows = next(iter(columns.values())).len()
        sources: list[tuple[Feature, np.ndarray]] = []  # per feature: float64 values or indices
        unknown_counts: dict[str, int] = {}
        for feature in self.features:
            column = columns[feature.name]
            if feature.fill_value is not None:
                column = column.fill_null(feature.fill_value)
            if isinstance(feature, NumericFeature):
                unusable = _unusable_numbers(column)
                if unusable.any():
                    raise DataError(_unusable_message(column, unusable, keep))
                sources.append((feature, column.cast(pl.Float64).to_numpy()))
                continue
            lookup = {category: index for index, category in enumerate(feature.categories)}
            indices = column.replace_strict(lookup, default=-1, return_dtype=pl.Int64)
            indices = indices.fill_null(-1).to_numpy()
            unseen = (indices < 0) & column.is_not_null().to_numpy()
            if unseen.any():
                if unknown == "error":
                    first = int(np.flatnonzero(unseen)[0])
                    raise DataError(
                        f"row {row_number(_source_index(first, keep))}, column "
                        f"{clip(repr(feature.name))}: unknown category {clip(repr(column[first]))}"
                        f"; the categories seen in training are "
                        f"{quoted_names(feature.categories)} (--unknown ignore encodes unknown "
                        "categories as all zeros)"
                    )
                unknown_counts[feature.name] = int(unseen.sum())
            sources.append((feature, indices))
        return torch.from_numpy(_encoded_rows(sources, n_rows, self.n_features)), unknown_counts

    def _class_indices(self, labels: pl.Series, keep: pl.Series | None) -> torch.Tensor:
        missing_rows = labels.is_null().arg_true()
        if missing_rows.len():
            rows = ", ".join(str(row_number(_source_index(i, keep))) for i in missing_rows.head(5))
            more = f" and {missing_rows.len() - 5} more" if missing_rows.len() > 5 else ""
            raise DataError(
                f"the target column {clip(repr(self.target))} is empty in row(s) {rows}{more}; "
                "every row needs a class to be trained or evaluated on"
            )
        unknown = ~labels.is_in(self.classes)
        if unknown.any():
            position = int(unknown.arg_true()[0])
            raise DataError(
                f"row {row_number(_source_index(position, keep))}, column "
                f"{clip(repr(self.target))}: unknown class {clip(repr(labels[position]))}; the "
                f"classes seen in training are {quoted_names(self.classes)}"
            )
        lookup = {name: position for position, name in enumerate(self.classes)}
        indices = labels.replace_strict(lookup, return_dtype=pl.Int64)
        return torch.from_numpy(indices.to_numpy().astype(np.int64))


def _bad_mask(bad: Any, column: pl.Series) -> pl.Series:
    """True at the rows of ``bad`` (a :class:`~softclass.data.column_types.BadCells`)."""
    return pl.Series([False] * column.len()).scatter(bad.rows, True)


def _encoded_rows(sources: Sequence[tuple[Feature, np.ndarray]], n_rows: int, width: int):
    """The float32 (N, F) feature matrix, written a block of rows at a time.

    Each block is filled output by output into contiguous rows of an (F, rows) buffer and
    transposed into place, so no full-size temporary exists beside the result (writing the
    columns of an (N, F) array one by one strides through memory and is several times slower).
    """
    matrix = np.empty((n_rows, width), dtype=np.float32)
    block_rows = max(1, _ENCODE_BLOCK_VALUES // max(width, 1))
    for start in range(0, n_rows, block_rows):
        stop = min(start + block_rows, n_rows)
        block = np.zeros((width, stop - start), dtype=np.float32)
        position = 0
        for feature, values in sources:
            part = values[start:stop]
            if isinstance(feature, NumericFeature):
                block[position] = (part - feature.offset) / feature.scale
                position += 1
                continue
            n_categories = len(feature.categories)
            if n_categories <= _ROW_BY_ROW_CATEGORIES:
                for index in range(n_categories):
                    block[position + index] = part == index
            else:
                known = np.flatnonzero(part >= 0)
                block[position + part[known], known] = 1.0
            position += n_categories
        matrix[start:stop] = block.T
    return matrix


def typed_table(
    table: pl.DataFrame,
    target: str | None = None,
    *,
    drop: Sequence[str] = (),
    ids: Sequence[str] = (),
    typing: TypingOptions | None = None,
    source: str = "the table",
) -> tuple[pl.DataFrame, tuple[ColumnType, ...]]:
    """Type the target and the feature candidates of ``table`` once, for :meth:`Recipe.fit`.

    Dropped and id columns stay as they are. The target is a number or a text column (labels
    such as ``yes``/``no`` stay text).

    Returns:
        ``(typed table, column types)``: pass both to ``Recipe.fit(typed, column_types=types)``
        (and to fits on row subsets of it) to read every cell only once.

    Raises:
        DataError: a column mixes numbers and text, or a cell cannot be read.
    """
    typing = typing or TypingOptions()
    target = table.columns[-1] if target is None and table.width else target
    _check_has_columns(table, [target], "the target")
    skipped = {*drop, *ids}
    types = []
    columns = []
    for name in table.columns:
        column = table.get_column(name)
        if name in skipped:
            columns.append(column)
            continue
        column_type, typed = type_column(column, source, typing)
        if name == target and column_type.kind not in (NUMBER, TEXT):
            column_type = _target_type(column_type)
            typed = read_column(column, column_type, typing.missing_markers)[0]
        types.append(column_type)
        columns.append(typed)
    return pl.DataFrame(columns), tuple(types)


def _target_type(column_type: ColumnType) -> ColumnType:
    """A target is read as numbers or as text labels (booleans and dates keep their text)."""
    if column_type.kind in (NUMBER, TEXT):
        return column_type
    return ColumnType(column_type.name, TEXT)


def _source_index(position: int, keep: pl.Series | None) -> int:
    """The row index in the caller's table of row ``position`` of a table filtered by ``keep``."""
    return int(position) if keep is None else int(keep.arg_true()[int(position)])


def _dropped_rows_warning(dropped: pl.Series) -> str:
    return (
        f"dropped {dropped.len()} row(s) with missing values: {row_list(dropped.to_list())} "
        f"({ROW_NUMBERING})"
    )


def _skipped_rows_warning(skipped: Sequence[tuple[int, str]]) -> str:
    shown = "; ".join(f"row {row_number(index)} ({reason})" for index, reason in skipped[:3])
    more = f" … and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return f"skipped {len(skipped)} row(s) (--on-error skip): {shown}{more} ({ROW_NUMBERING})"


def _unknown_categories_warning(counts: Mapping[str, int]) -> str:
    parts = [f"{clip(repr(name))} {count}" for name, count in counts.items()]
    shown = ", ".join(parts[:5]) + (f" … and {len(parts) - 5} more" if len(parts) > 5 else "")
    return (
        f"categories not seen in training, encoded as all zeros (cells per column): {shown}; "
        "--unknown error refuses them"
    )


def _check_choice(option: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{_OPTIONS.get(option, option)} {clip(repr(value))} is not allowed; expected one of "
            f"{quoted_names(allowed)}"
        )


def _check_has_columns(table: pl.DataFrame, names: Sequence[object], role: str) -> None:
    present = set(table.columns)
    absent = [name for name in names if name not in present]
    if not absent:
        return
    available = f"the table's columns are {quoted_names(table.columns)}"
    if role == "the target":
        name = absent[0]
        hint = did_you_mean(name, table.columns) if isinstance(name, str) else ""
        raise DataError(
            f"no column {clip(repr(name))} to use as the target{hint}; {available} (--target "
            "COL chooses it)"
        )
    raise DataError(f"the table lacks the {role} column(s) {quoted_names(absent)}; {available}")


def _check_named_columns(
    table: pl.DataFrame, names: Sequence[str], option: str, target: str
) -> None:
    present = set(table.columns)
    for name in names:
        if name not in present:
            raise DataError(
                f"{option} {clip(repr(name))}: no such column{did_you_mean(name, table.columns)}"
                f"; the table's columns are {quoted_names(table.columns)}"
            )
        if name == target:
            raise DataError(f"{option} {clip(repr(name))}: that is the target column")


def _inputs(
    typed: Mapping[str, pl.Series], types: Mapping[str, ColumnType]
) -> tuple[dict[str, pl.Series], dict[str, tuple[str, str | None]]]:
    """Feature inputs from typed columns: numbers and booleans as Float64, dates as parts.

    Returns ``(inputs, origin)``: inputs by feature name, and each name's (column, date part).
    """
    inputs: dict[str, pl.Series] = {}
    origin: dict[str, tuple[str, str | None]] = {}
    for name, column in typed.items():
        kind = types[name].kind
        if kind == DATE:
            parts = {
                "year": column.dt.year(),
                "month": column.dt.month(),
                "day_of_week": column.dt.weekday(),
            }
            for part in DATE_PARTS:
                inputs[f"{name}.{part}"] = parts[part].cast(pl.Float64).alias(f"{name}.{part}")
                origin[f"{name}.{part}"] = (name, part)
            continue
        inputs[name] = column.cast(pl.Float64) if kind == BOOLEAN else column
        origin[name] = (name, None)
    return inputs, origin


def _stored_source(origin: tuple[str, str | None]) -> tuple[str | None, str | None]:
    """``(column, part)`` stored on a numeric feature: (None, None) for a plain column."""
    return (None, None) if origin[1] is None else origin


def _id_like(column: pl.Series, column_type: ColumnType) -> str | None:
    """Why a typed feature column looks like an identifier, or None."""
    if column.len() - column.null_count() < ID_MIN_ROWS:
        return None
    present = column.drop_nulls()
    n_rows = present.len()
    if column_type.kind == TEXT:
        n_distinct = present.n_unique()
        if n_distinct > ID_FRACTION * n_rows:
            return f"{n_distinct} distinct in {n_rows} rows"
        return None
    if column_type.kind != NUMBER or column.null_count() or not bool((present % 1 == 0).all()):
        return None
    if present.n_unique() != n_rows:
        return None
    counts_up = float(present.max()) - float(present.min()) + 1 == n_rows
    if counts_up or _ID_NAME.search(column.name):
        return f"distinct whole numbers, {n_rows} rows"
    return None


def _class_labels(target: pl.Series) -> pl.Series:
    """Target values as class-name strings (null where missing)."""
    if not target.dtype.is_numeric():
        return target
    non_finite = target.is_nan() | target.is_infinite()
    if non_finite.any():
        index = int(non_finite.arg_true()[0])
        raise DataError(
            f"row {row_number(index)}, column {clip(repr(target.name))}: the class "
            f"{target[index]!r} is not a finite number"
        )
    values = target.drop_nulls().unique().to_list()
    return target.replace_strict(
        {value: _number_label(value) for value in values}, default=None, return_dtype=pl.String
    )


def _number_label(value: float) -> str:
    """``3.0`` → ``"3"``, ``2.5`` → ``"2.5"``: how a numeric class is named."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _sorted_classes(
    target: pl.Series, labels: pl.Series
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    counted = labels.drop_nulls().value_counts()
    counts = dict(
        zip(
            counted.get_column(labels.name).to_list(),
            counted.get_column("count").to_list(),
            strict=True,
        )
    )
    if target.dtype.is_numeric():
        classes = tuple(sorted(counts, key=float))
    else:
        classes = tuple(sorted(counts))
    return classes, tuple(int(counts[name]) for name in classes)


def _target_notes(
    target: str,
    column: pl.Series,
    classes: tuple[str, ...],
    counts: tuple[int, ...],
    default_target: bool,
) -> list[str]:
    """Check the target's classes: refuse one class or a continuous target; note the odd ones."""
    name = clip(repr(target))
    how = "the last column, chosen as no --target was given" if default_target else "--target"
    if len(classes) < 2:
        raise DataError(
            f"the target column {name} ({how}) has only one class "
            f"({clip(repr(classes[0]))}); a classifier needs at least two (--target COL chooses "
            "another column)"
        )
    n_rows = sum(counts)
    if column.dtype.is_numeric() and len(classes) > max(
        MAX_NUMERIC_CLASSES, CONTINUOUS_FRACTION * n_rows
    ):
        raise DataError(
            f"the target column {name} ({how}) looks continuous: {len(classes)} distinct numbers "
            f"in {n_rows} rows, e.g. {quoted_names(classes[:3])}; softclass classifies — choose "
            "a column of classes with --target COL"
        )
    notes = []
    if default_target and column.dtype.is_numeric():
        notes.append(
            f"no --target given: predicting the last column {name}, a number column with "
            f"{len(classes)} classes ({quoted_names(classes, 5)}); --target COL chooses another"
        )
    single = [label for label, count in zip(classes, counts, strict=True) if count == 1]
    if single:
        notes.append(
            f"target {name}: {len(single)} class(es) with a single row ({quoted_names(single, 5)}"
            "); they cannot be both learned and validated"
        )
    return notes


def _checked_divisors(
    normalization: str,
    divisors: Mapping[str, float] | None,
    inputs: Mapping[str, pl.Series],
    types: Mapping[str, ColumnType],
) -> dict[str, float]:
    numeric = [name for name in inputs if name in types and types[name].kind == NUMBER]
    if normalization != "divide":
        if divisors:
            raise ConfigError(
                f"--divide is only used with --normalize divide, not --normalize {normalization}"
            )
        return {}
    divisors = dict(divisors or {})
    lacking = [name for name in numeric if name not in divisors]
    if lacking:
        raise ConfigError(
            f"--normalize divide needs a divisor for every number feature column (--divide "
            f"COL=VALUE); missing for {quoted_names(lacking)}"
        )
    unknown = [name for name in divisors if name not in numeric]
    if unknown:
        raise ConfigError(
            f"divisors given for {quoted_names(unknown)}, which are not numeric feature columns; "
            f"the numeric feature columns are {quoted_names(numeric)}"
        )
    for name, divisor in divisors.items():
        if isinstance(divisor, bool) or not isinstance(divisor, int | float):
            raise ConfigError(
                f"the divisor for {clip(repr(name))} must be a number, got {clip(repr(divisor))}"
            )
        if not math.isfinite(divisor) or divisor <= 0:
            raise ConfigError(
                f"the divisor for {clip(repr(name))} must be a finite positive number, got "
                f"{divisor!r}"
            )
    return {name: float(divisor) for name, divisor in divisors.items()}


def _missing_cells(columns: Mapping[str, pl.Series]) -> tuple[list[tuple[int, str]], int]:
    """The first missing cells in row-major order, and how many there are in all."""
    cells: list[tuple[int, int, str]] = []
    total = 0
    for position, (name, column) in enumerate(columns.items()):
        n_missing = column.null_count()
        if not n_missing:
            continue
        total += n_missing
        cells.extend((int(index), position, name) for index in column.is_null().arg_true().head(5))
    cells.sort()
    return [(index, name) for index, _, name in cells], total


def _complete_rows(
    columns: Mapping[str, pl.Series], labels: pl.Series, missing: str
) -> pl.Series | None:
    """Apply the missing policy at fit time: the rows to keep (None: all), or raise."""
    missing_targets = labels.is_null()
    if missing_targets.any() and missing != "drop":
        cells, total = _missing_cells({labels.name: labels})
        raise DataError(
            f"missing class in the target column: {cell_list(cells, total)}; remove those rows "
            "or use --missing drop"
        )
    cells, total = _missing_cells(columns)
    if cells and missing == "error":
        raise DataError(
            f"missing values: {cell_list(cells, total)}; fill them in, or use --missing drop to "
            "skip those rows or --missing impute to fill them with the training mean (numeric) "
            "or the most frequent category"
        )
    if missing != "drop" or not (cells or missing_targets.any()):
        return None
    incomplete = missing_targets
    for column in columns.values():
        incomplete = incomplete | column.is_null()
    return ~incomplete


def _unusable_numbers(column: pl.Series) -> pl.Series:
    """True where a numeric value is NaN, infinite or beyond float32's range."""
    if not column.null_count() and column.len():
        with np.errstate(invalid="ignore"):
            largest = np.abs(column.to_numpy()).max()  # NaN if any value is NaN
        if largest <= FLOAT32_MAX:
            return pl.repeat(False, column.len(), eager=True)
    return (column.is_nan() | (column.abs() > FLOAT32_MAX)).fill_null(False)


def _unusable_message(column: pl.Series, unusable: pl.Series, keep: pl.Series | None) -> str:
    position = int(unusable.arg_true()[0])
    value = column[position]
    problem = (
        "is not a finite number; features must be finite"
        if math.isnan(value) or math.isinf(value)
        else f"is outside float32's range (±{FLOAT32_MAX:.4g}); features are float32"
    )
    more = f" (and {unusable.sum() - 1} more in this column)" if unusable.sum() > 1 else ""
    return (
        f"row {row_number(_source_index(position, keep))}, column {clip(repr(column.name))}: "
        f"{value!r} {problem}{more}"
    )


def _fit_numeric(
    column: pl.Series,
    normalization: str,
    divisors: Mapping[str, float],
    missing: str,
    source: tuple[str | None, str | None],
) -> NumericFeature:
    mean = float(column.mean())  # polars aggregations skip missing cells
    std = float(column.std(ddof=0))
    minimum = float(column.min())
    maximum = float(column.max())
    if normalization == "minmax":
        offset, scale = minimum, maximum - minimum
    elif normalization == "divide" and column.name in divisors:
        offset, scale = 0.0, divisors[column.name]
    else:
        offset, scale = mean, std
    return NumericFeature(
        name=column.name,
        offset=offset,
        scale=scale if scale != 0 else 1.0,
        fill_value=mean if missing == "impute" else None,
        mean=mean,
        std=std,
        minimum=minimum,
        maximum=maximum,
        column=source[0],
        part=source[1],
    )


def _fit_categorical(column: pl.Series, missing: str) -> CategoricalFeature:
    counted = column.drop_nulls().value_counts()
    counts = dict(
        zip(
            counted.get_column(column.name).to_list(),
            counted.get_column("count").to_list(),
            strict=True,
        )
    )
    categories = tuple(sorted(counts))
    most_frequent = min(categories, key=lambda category: (-counts[category], category))
    return CategoricalFeature(
        name=column.name,
        categories=categories,
        counts=tuple(int(counts[category]) for category in categories),
        fill_value=most_frequent if missing == "impute" else None,
    )


def _column_table(
    table: pl.DataFrame,
    target: str,
    target_type: ColumnType,
    target_column: pl.Series,
    classes: tuple[str, ...],
    types: Mapping[str, ColumnType],
    typed: Mapping[str, pl.Series],
    features: Sequence[Feature],
    id_like: Mapping[str, str],
    drop: Sequence[str],
    ids: Sequence[str],
    normalization: str,
    typing: TypingOptions,
    markers: Sequence[str],
) -> tuple[ColumnInfo, ...]:
    """The typing table: every column of ``table`` with its type, role, action and counts."""
    by_source: dict[str, list[Feature]] = {}
    for feature in features:
        by_source.setdefault(feature.source, []).append(feature)
    rows = []
    for name in table.columns:
        if name == target:
            column, column_type = target_column, target_type
            role, action = "target", f"target, {len(classes)} classes"
        elif name in types and name not in id_like:
            column, column_type = typed[name], types[name]
            role, action = "feature", _feature_action(column_type, by_source[name], normalization)
        else:
            column_type = types.get(name) or _type_or_text(table.get_column(name), typing)
            column = typed.get(name)
            if column is None:
                column = read_column(table.get_column(name), column_type, markers)[0]
            if name in ids:
                role, action = "id", "id: carried to predictions"
            elif name in drop:
                role, action = "dropped", "dropped (--drop)"
            else:
                role, action = "dropped", f"dropped: ID-like ({id_like[name]})"
        rows.append(
            ColumnInfo(
                type=column_type,
                role=role,
                action=action,
                n_missing=column.null_count(),
                n_distinct=_distinct(column, column_type),
            )
        )
    return tuple(rows)


def _distinct(column: pl.Series, column_type: ColumnType) -> int:
    """Distinct present values: exact, or estimated for numbers and dates of long columns."""
    n_present = column.len() - column.null_count()
    if column_type.kind in (NUMBER, DATE) and n_present > EXACT_DISTINCT_ROWS:
        return int(column.drop_nulls().approx_n_unique())
    return column.n_unique() - (1 if column.null_count() else 0)


def _type_or_text(column: pl.Series, typing: TypingOptions) -> ColumnType:
    try:
        return infer_column_type(column, "the table", typing)
    except DataError:
        return ColumnType(column.name, TEXT, note="mixes numbers and text")


def _feature_action(
    column_type: ColumnType, features: Sequence[Feature], normalization: str
) -> str:
    feature = features[0]
    if isinstance(feature, CategoricalFeature):
        return f"one-hot, {len(feature.categories)} categories"
    scaling = (
        f"divided by {feature.scale:g}"
        if normalization == "divide" and column_type.kind == NUMBER
        else f"scaled ({'zscore' if normalization == 'divide' else normalization})"
    )
    if column_type.kind == DATE:
        return f"year, month, weekday; {scaling}"
    if column_type.kind == BOOLEAN:
        return f"{column_type.boolean_texts[0]} = 1; {scaling}"
    return scaling


def _feature_to_dict(feature: Feature) -> dict[str, Any]:
    if isinstance(feature, NumericFeature):
        data = {
            "name": feature.name,
            "kind": feature.kind,
            "offset": feature.offset,
            "scale": feature.scale,
            "fill_value": feature.fill_value,
            "mean": feature.mean,
            "std": feature.std,
            "minimum": feature.minimum,
            "maximum": feature.maximum,
        }
        if feature.column is not None:
            data.update(column=feature.column, part=feature.part)
        return data
    return {
        "name": feature.name,
        "kind": feature.kind,
        "categories": list(feature.categories),
        "counts": list(feature.counts),
        "fill_value": feature.fill_value,
    }


class _RecipeReader:
    """Checks a recipe dictionary field by field; every problem is a ModelFileError."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, expected: str, value: object) -> ModelFileError:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return ModelFileError(
            f"{self.source}: field {field!r} should be {expected}, got {shown}; the recipe file "
            "is damaged or was not written by softclass"
        )

    def field(self, data: dict[str, Any], key: str, where: str) -> Any:
        if key not in data:
            raise ModelFileError(
                f"{self.source}: the field {where + key!r} is missing; the recipe file is "
                "incomplete"
            )
        return data[key]

    def text(self, data: dict[str, Any], key: str, where: str = "") -> str:
        value = self.field(data, key, where)
        if not isinstance(value, str) or not value:
            raise self.fail(where + key, "a non-empty string", value)
        return value

    def number(self, data: dict[str, Any], key: str, where: str = "") -> float:
        value = self.field(data, key, where)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(where + key, "a finite number", value)
        return float(value)

    def count(self, data: dict[str, Any], key: str, where: str = "") -> int:
        value = self.field(data, key, where)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(where + key, "a whole number ≥ 0", value)
        return value

    def texts(self, data: dict[str, Any], key: str, where: str = "") -> tuple[str, ...]:
        value = self.field(data, key, where)
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(item, str) for item in value)
            or len(set(value)) != len(value)
        ):
            raise self.fail(where + key, "a non-empty list of distinct strings", value)
        return tuple(value)

    def counts(
        self, data: dict[str, Any], key: str, length: int, where: str = ""
    ) -> tuple[int, ...]:
        value = self.field(data, key, where)
        if (
            not isinstance(value, list)
            or len(value) != length
            or not all(isinstance(item, int) and not isinstance(item, bool) for item in value)
            or any(item < 0 for item in value)
        ):
            raise self.fail(where + key, f"a list of {length} whole numbers ≥ 0", value)
        return tuple(value)

    def recipe(self, data: Any) -> Recipe:
        if not isinstance(data, dict):
            raise self.fail("(top level)", "a JSON object", data)
        if data.get("format") != RECIPE_FORMAT:
            raise ModelFileError(
                f"{self.source}: not a softclass recipe (field 'format' is "
                f"{data.get('format')!r}, expected {RECIPE_FORMAT!r})"
            )
        version = self.count(data, "version")
        if version not in (1, RECIPE_VERSION):
            raise ModelFileError(
                f"{self.source}: recipe format version {version} cannot be read by this softclass, "
                f"which reads versions 1 to {RECIPE_VERSION}"
                + ("; upgrade softclass" if version > RECIPE_VERSION else "")
            )
        normalization = self.text(data, "normalization")
        if normalization not in NORMALIZATIONS:
            raise self.fail(
                "normalization", f"one of {quoted_names(NORMALIZATIONS)}", normalization
            )
        missing = self.text(data, "missing")
        if missing not in MISSING_POLICIES:
            raise self.fail("missing", f"one of {quoted_names(MISSING_POLICIES)}", missing)
        classes = self.texts(data, "classes")
        if len(classes) < 2:
            raise self.fail("classes", "at least two class names", list(classes))
        raw_features = self.field(data, "features", "")
        if not isinstance(raw_features, list) or not raw_features:
            raise self.fail("features", "a non-empty list", raw_features)
        features = tuple(
            self.feature(item, f"features[{position}].", missing)
            for position, item in enumerate(raw_features)
        )
        target = self.text(data, "target")
        names = [feature.name for feature in features]
        if len(set(names)) != len(names) or target in names:
            raise self.fail("features", "distinct names different from the target", names)
        extra: dict[str, Any] = {}
        if version >= 2:
            raw_columns = self.field(data, "columns", "")
            if not isinstance(raw_columns, list):
                raise self.fail("columns", "a list", raw_columns)
            extra["columns"] = tuple(
                self.column(item, f"columns[{position}].")
                for position, item in enumerate(raw_columns)
            )
            extra["id_columns"] = self.names(data, "id_columns")
            extra["missing_markers"] = self.names(data, "missing_markers", allow_empty=True)
        return Recipe(
            target=target,
            classes=classes,
            class_counts=self.counts(data, "class_counts", len(classes)),
            features=features,
            normalization=normalization,
            missing=missing,
            n_rows=self.count(data, "n_rows"),
            **extra,
        )

    def names(self, data: dict[str, Any], key: str, allow_empty: bool = False) -> tuple[str, ...]:
        value = self.field(data, key, "")
        if not isinstance(value, list) or not all(
            isinstance(item, str) and (item or allow_empty) for item in value
        ):
            raise self.fail(key, "a list of strings", value)
        return tuple(value)

    def column(self, data: Any, where: str) -> ColumnInfo:
        if not isinstance(data, dict):
            raise self.fail(where.rstrip("."), "a JSON object", data)
        kind = self.text(data, "kind", where)
        if kind not in KINDS:
            raise self.fail(where + "kind", f"one of {quoted_names(KINDS)}", kind)
        role = self.text(data, "role", where)
        if role not in ROLES:
            raise self.fail(where + "role", f"one of {quoted_names(ROLES)}", role)
        decimal = self.text(data, "decimal", where)
        if decimal not in DECIMAL_MARKS:
            raise self.fail(where + "decimal", "'.' or ','", decimal)
        date_format = self.field(data, "date_format", where)
        if date_format is not None and (not isinstance(date_format, str) or not date_format):
            raise self.fail(where + "date_format", "null or a format string", date_format)
        boolean_texts = tuple(self.texts(data, "boolean_texts", where))
        if boolean_texts not in BOOLEAN_PAIRS:
            raise self.fail(where + "boolean_texts", f"one of {list(BOOLEAN_PAIRS)}", boolean_texts)
        note = self.field(data, "note", where)
        action = self.field(data, "action", where)
        if not isinstance(note, str) or not isinstance(action, str):
            raise self.fail(where + "note", "strings (note and action)", (note, action))
        return ColumnInfo(
            type=ColumnType(
                self.text(data, "name", where),
                kind,
                decimal=decimal,
                date_format=date_format,
                boolean_texts=boolean_texts,
                note=note,
            ),
            role=role,
            action=action,
            n_missing=self.count(data, "n_missing", where),
            n_distinct=self.count(data, "n_distinct", where),
        )

    def feature(self, data: Any, where: str, missing: str) -> Feature:
        if not isinstance(data, dict):
            raise self.fail(where.rstrip("."), "a JSON object", data)
        kind = self.text(data, "kind", where)
        name = self.text(data, "name", where)
        needs_fill = missing == "impute"
        if kind == "numeric":
            scale = self.number(data, "scale", where)
            if not scale > 0:  # zscore and minmax give positive scales, divide positive divisors
                raise self.fail(where + "scale", "a positive number", scale)
            fill_value = self.field(data, "fill_value", where)
            if needs_fill or fill_value is not None:
                fill_value = self.number(data, "fill_value", where)
            column, part = data.get("column"), data.get("part")
            if column is not None or part is not None:
                column = self.text(data, "column", where)
                if part not in DATE_PARTS:
                    raise self.fail(where + "part", f"one of {quoted_names(DATE_PARTS)}", part)
            return NumericFeature(
                column=column,
                part=part,
                name=name,
                offset=self.number(data, "offset", where),
                scale=scale,
                fill_value=fill_value,
                mean=self.number(data, "mean", where),
                std=self.number(data, "std", where),
                minimum=self.number(data, "minimum", where),
                maximum=self.number(data, "maximum", where),
            )
        if kind == "categorical":
            categories = self.texts(data, "categories", where)
            fill_value = self.field(data, "fill_value", where)
            if (needs_fill or fill_value is not None) and fill_value not in categories:
                raise self.fail(where + "fill_value", "one of the categories", fill_value)
            return CategoricalFeature(
                name=name,
                categories=categories,
                counts=self.counts(data, "counts", len(categories), where),
                fill_value=fill_value,
            )
        raise self.fail(where + "kind", "'numeric' or 'categorical'", kind)
