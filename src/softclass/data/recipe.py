"""The preprocessing recipe: what was learned from the training table, saved beside the model.

A :class:`Recipe` is fitted once on the training table and then turns any table with the same
columns into tensors exactly the same way — at training, evaluation and prediction time, and
after a save/load round trip. Raw text cells are read by the :class:`ColumnType` recorded at
fitting (decimal mark, date format, missing markers), so a prediction table is never re-guessed.

The rules live beside their job: the typing table and ID-like columns in
:mod:`~softclass.data.typing_table`, features and normalization in
:mod:`~softclass.data.features`, classes in :mod:`~softclass.data.target`, the JSON file in
:mod:`~softclass.data.recipe_file`.

* **Missing values**: ``missing="error"`` (default) raises naming the first rows and columns;
  ``"drop"`` fits on complete rows, and :meth:`Recipe.prepare` drops incomplete rows later
  (reporting them); ``"impute"`` fills numeric outputs with the training mean and categorical
  cells with the most frequent training category (ties: the first in sorted order). A missing
  target is never imputed: it is an error, or the row is dropped under "drop".
* **Unknown categories** at transform time: ``unknown="ignore"`` (default) encodes them as all
  zeros and :meth:`Recipe.prepare` warns with the count per column; ``"error"`` raises.
* **Bad rows** at prepare time: ``on_error="error"`` (default) raises on the first cell that
  cannot be read or used; ``"skip"`` leaves those rows out and reports each with its reason.
* At prediction time missing feature columns are an error naming them; columns the recipe does
  not use are ignored, and :meth:`Recipe.prepare` reports them in its ``warnings``; the target
  column may be absent (``use_target=False`` ignores it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from softclass.data.checks import (
    check_bins,
    check_choice,
    check_has_columns,
    check_named_columns,
    source_index,
)
from softclass.data.column_types import (
    MISSING_MARKERS,
    NUMBER,
    TEXT,
    ColumnType,
    TypingOptions,
    read_column,
)
from softclass.data.expansion import encode_compact
from softclass.data.features import (
    NORMALIZATIONS,
    CategoricalFeature,
    Feature,
    GatheredColumns,
    NumericFeature,
    add_indicators,
    checked_divisors,
    encode,
    feature_inputs,
    fit_features,
)
from softclass.data.messages import cell_list, clip, quoted_names
from softclass.data.missing import (
    MISSING_POLICIES,
    check_labelled,
    dropped_rows_warning,
    fit_notes,
    missing_cells,
    unlabelled_warning,
)
from softclass.data.prepared import (
    PreparedTable,
    skipped_rows_warning,
    unknown_categories_warning,
    unlabelled_rows,
    unusable_rows,
)
from softclass.data.recipe_file import (
    RECIPE_VERSION,
    read_recipe_json,
    recipe_fields,
    recipe_to_dict,
)
from softclass.data.target import (
    as_target_type,
    class_indices,
    class_labels,
    sorted_classes,
    target_notes,
)
from softclass.data.typing_table import (
    ColumnInfo,
    column_table,
    left_out_columns,
    typed_candidates,
    typed_table,
)
from softclass.errors import DataError
from softclass.io import atomic_write_json

UNKNOWN_POLICIES = ("ignore", "error")
ERROR_POLICIES = ("error", "skip")
__all__ = [  # the names the modules split out of this one still offer here
    "ERROR_POLICIES",
    "MISSING_POLICIES",
    "NORMALIZATIONS",
    "RECIPE_VERSION",
    "UNKNOWN_POLICIES",
    "CategoricalFeature",
    "ColumnInfo",
    "NumericFeature",
    "PreparedTable",
    "Recipe",
    "typed_table",
]


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
        missing: str = "impute",
        bins: int = 0,
        keep: Sequence[str] = (),
        drop: Sequence[str] = (),
        ids: Sequence[str] = (),
        typing: TypingOptions | None = None,
        column_types: Sequence[ColumnType] | None = None,
        rows: np.ndarray | torch.Tensor | None = None,
    ) -> Recipe:
        """Learn a recipe from a training table.

        Args:
            table: the training table: raw text (``read_table(..., raw=True)``), typed
                (:func:`softclass.data.read_table`) or any polars DataFrame.
            target: name of the target column; default the last column.
            normalization: "zscore" (default), "minmax" or "divide" (``--normalize``).
            divisors: with normalization="divide", the constant for every number feature
                column, e.g. ``{"age": 100, "income": 100_000, "weight": 1000}`` (``--divide``).
            missing: "impute" (default), "drop" or "error" (``--missing``; see
                :mod:`~softclass.data.missing`).
            bins: quantile bins of the piecewise-linear encoding of each number (``--bins``;
                0, the default: none; see :mod:`~softclass.data.features`).
            keep: columns kept as features even when ID-like (``--keep``).
            drop: columns left out (``--drop``).
            ids: columns carried into predictions, not features (``--id``).
            typing: decimal mark and extra missing markers (``--decimal``, ``--na-values``).
            column_types: the column types from :func:`typed_table` (with the same options)
                when ``table`` is its typed table: cells already typed are not read again;
                default: inferred here.
            rows: 0-based positions (int64, ascending) of the rows the features, classes and
                counts are fitted on, e.g. a split's training rows; the typing table, ID-like
                columns and notes still describe every row. Default: every row.

        Raises:
            ConfigError: an unknown normalization or missing policy, or divisors that do not
                match the number feature columns.
            DataError: unknown target or named column, no feature column, a cell its column's
                type cannot read, missing values under "error", a missing target under
                "impute", NaN/inf/out-of-range features, fewer than two classes, a target that
                looks continuous, or no rows left.
        """
        check_choice("normalization", normalization, NORMALIZATIONS)
        check_choice("missing", missing, MISSING_POLICIES)
        check_bins(bins)
        typing = typing or TypingOptions()
        default_target = target is None
        target = _checked_target(table, target, {"--keep": keep, "--drop": drop, "--id": ids})
        if column_types is None:
            table, column_types = typed_table(table, target, drop=drop, ids=ids, typing=typing)
        known = {column_type.name: column_type for column_type in column_types}
        markers = typing.missing_markers
        target_type = as_target_type(known.get(target) or ColumnType(target, TEXT))
        target_column, _ = read_column(table.get_column(target), target_type, markers)
        labels = class_labels(target_column)
        check_labelled(labels)
        candidates = [name for name in table.columns if name not in {target, *drop, *ids}]
        types, typed = typed_candidates(table, candidates, known, typing)
        in_rows = labels.is_not_null()
        if rows is not None:
            rows = pl.Series(np.asarray(rows, dtype=np.int64))
            in_rows = in_rows & pl.repeat(False, table.height, eager=True).scatter(rows, True)
        left_out = left_out_columns(typed, types, keep, in_rows)
        inputs, origin = feature_inputs(
            {name: typed[name] for name in typed if name not in left_out}, types
        )
        if not inputs:
            raise DataError(
                "no feature column is left"
                + (
                    f" (left out: {quoted_names(left_out)}; --keep COL uses one)"
                    if left_out
                    else ""
                )
            )
        scales = checked_divisors(normalization, divisors, inputs, types)
        counted = labels if rows is None else labels.gather(rows)  # the rows fitted on
        if rows is not None:
            inputs = GatheredColumns(inputs, rows)  # one column at a time
        features, kept = fit_features(inputs, origin, counted, missing, normalization, scales, bins)
        del inputs
        counted = counted if kept is None else counted.filter(kept)
        classes, class_counts = sorted_classes(target_column, counted)
        notes = fit_notes(target_column, labels, kept if rows is None else None, types, left_out)
        whole = class_counts if rows is None else sorted_classes(target_column, labels)[1]
        notes += target_notes(target, target_column, classes, whole, default_target)
        columns = column_table(
            table,
            target,
            target_type,
            target_column,
            classes,
            types,
            typed,
            features,
            left_out,
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
            n_rows=counted.len(),
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
        check_choice("unknown", unknown, UNKNOWN_POLICIES)
        inputs, _ = self.read_inputs(table, skip=False)
        self._check_no_missing(inputs)
        features, _ = encode(self.features, self.n_features, inputs, None, unknown)
        return features

    def encode_targets(self, table: pl.DataFrame) -> torch.Tensor:
        """Class indices of the target column: int64 tensor of shape (N,), in ``classes`` order.

        Raises:
            DataError: the target column is absent, a target is missing, or a class was not seen
                in training.
        """
        return class_indices(self._target_labels(table), self.classes, keep=None)

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
        allow_no_rows: bool = False,
        features: bool = True,
        compact: bool = False,
    ) -> PreparedTable:
        """Features, targets (when the target column is present and used) and warnings.

        Rows without a class are left out (with one warning) when the target is used; under
        ``missing="drop"`` rows with a missing feature are dropped; under ``on_error="skip"``
        rows with a cell that cannot be read or used (not a number, missing without a policy,
        not finite, unknown category under ``unknown="error"``, unknown class) are left out.
        ``rows`` says which input rows were kept; warnings name the others. Unused columns are
        ignored with a warning.
        Row numbers in errors refer to ``table`` as given. ``features=False``: rows and targets
        alone, features not encoded nor checked (an (N, 0) tensor), e.g. to split a table.
        ``compact``: with bins, the features as :class:`~softclass.data.expansion.FeatureRows`
        (the bins made where the rows are used) instead of the (N, F) matrix.

        Raises:
            DataError: as :meth:`transform` and :meth:`encode_targets` (under
                ``on_error="error"``), or when every row is skipped (unless
                ``allow_no_rows``: then the result has zero rows).
        """
        check_choice("unknown", unknown, UNKNOWN_POLICIES)
        check_choice("on_error", on_error, ERROR_POLICIES)
        skip = on_error == "skip"
        warnings = []
        shown = [name for name in self.unused_columns(table) if use_target or name != self.target]
        if shown:
            warnings.append(f"ignoring column(s) not used by the model: {quoted_names(shown)}")
        inputs, bad = self.read_inputs(table, skip=skip, source=source)
        labels = self._target_labels(table) if use_target and self.target in table.columns else None
        if labels is not None and skip:
            unlabelled_rows(labels, self.classes, bad)
        incomplete = pl.repeat(False, table.height, eager=True)
        if labels is not None and labels.null_count():
            incomplete = labels.is_null()
            warnings.append(unlabelled_warning(incomplete.arg_true(), self.target))
        if self.missing == "drop":
            dropped = pl.repeat(False, table.height, eager=True)
            for column in inputs.values():
                dropped = dropped | column.is_null()
            dropped = dropped & ~incomplete
            if dropped.any():
                warnings.append(dropped_rows_warning(dropped.arg_true()))
                incomplete = incomplete | dropped
        elif skip and self.missing == "error":
            for name, column in inputs.items():
                for index in column.is_null().arg_true().to_list():
                    bad.setdefault(index, f"column {clip(repr(name))}: missing value")
        if skip:
            unusable_rows(self.features, inputs, unknown, bad)
        keep = None
        skipped = tuple(sorted(bad.items()))
        if skipped:
            is_bad = pl.Series([False] * table.height)
            is_bad = is_bad.scatter([index for index, _ in skipped], True)
            incomplete = incomplete | is_bad
            warnings.append(skipped_rows_warning(skipped))
        if incomplete.any():
            keep = ~incomplete
            if not keep.any() and not allow_no_rows:
                raise DataError(
                    f"no row is left: all {table.height} rows were "
                    + ("skipped" if skipped else "dropped for missing values")
                )
            inputs = {name: column.filter(keep) for name, column in inputs.items()}
            labels = None if labels is None else labels.filter(keep)
        self._check_no_missing(inputs, keep)
        used = self.features if features else ()  # none: an (N, 0) tensor
        encoded, unknown_counts = (
            encode_compact(used, inputs, keep, unknown)
            if compact and used
            else encode(used, len(self.feature_names) if used else 0, inputs, keep, unknown)
        )
        if unknown_counts:
            warnings.append(unknown_categories_warning(unknown_counts))
        rows = torch.arange(table.height, dtype=torch.int64)
        return PreparedTable(
            features=encoded,
            targets=None if labels is None else class_indices(labels, self.classes, keep),
            rows=rows if keep is None else rows[torch.from_numpy(keep.to_numpy())],
            warnings=tuple(warnings),
            skipped=skipped,
            unknown_categories=unknown_counts,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description of the recipe, with its format name and version."""
        return recipe_to_dict(self)

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
        return cls(**recipe_fields(data, source))

    def save(self, path: str | Path) -> Path:
        """Write the recipe as JSON to ``path`` atomically and return the path."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read a recipe written by :meth:`save`.

        Raises:
            ModelFileError: the file is missing, not UTF-8 JSON, or not a valid recipe.
        """
        return cls.from_dict(read_recipe_json(path), source=str(path))

    def read_inputs(
        self,
        table: pl.DataFrame,
        skip: bool,
        source: str = "the table",
        typed: bool = False,
        indicators: pl.DataType = pl.Float64,
    ) -> tuple[dict[str, pl.Series], dict[int, str]]:
        """The feature inputs of ``table`` read as in training, and (under ``skip``) bad rows.
        ``typed``: ``table`` is :func:`typed_table`'s, typed by this recipe's column types (its
        text columns are taken as they are: reading them again gives the same cells).
        ``indicators``: the dtype of the 0/1 missing indicators.

        Returns:
            ``(inputs, bad)``: one series per feature name (numbers Float64, categories
            String; unreadable cells null) and ``{0-based row: reason}`` for unreadable cells.
        """
        sources = self.source_columns
        check_has_columns(table, list(sources), "feature")
        typed_columns: dict[str, pl.Series] = {}
        types: dict[str, ColumnType] = {}
        bad: dict[int, str] = {}
        for name in sources:
            types[name] = self.column_type(name)
            if typed and types[name].kind == TEXT and table.schema[name] == pl.String:
                typed_columns[name] = table.get_column(name)
                continue
            typed_columns[name], cells = read_column(
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
        inputs, origin = feature_inputs(typed_columns, types)
        indicated = [
            feature.source
            for feature in self.features
            if getattr(feature, "part", None) == "missing"
        ]
        inputs, _ = add_indicators(inputs, origin, indicated, indicators)
        return {feature.name: inputs[feature.name] for feature in self.features}, bad

    def _target_labels(self, table: pl.DataFrame) -> pl.Series:
        check_has_columns(table, [self.target], "the target")
        target_type = self.column_type(self.target)
        column, bad = read_column(table.get_column(self.target), target_type, self.missing_markers)
        if bad is not None:  # a number target with a text cell: a class the model never saw
            text = table.get_column(self.target).cast(pl.String).str.strip_chars()
            return class_labels(column).zip_with(~_bad_mask(bad, column), text)
        return class_labels(column)

    def _check_no_missing(
        self, columns: dict[str, pl.Series], keep: pl.Series | None = None
    ) -> None:
        if self.missing == "impute":
            return
        cells, total = missing_cells(columns)
        if cells:
            cells = [(source_index(index, keep), name) for index, name in cells]
            hint = (
                "use Recipe.prepare(table), which drops incomplete rows and reports them"
                if self.missing == "drop"
                else "fill them in (the model was trained with --missing error), or pass "
                "--on-error skip to leave those rows out"
            )
            raise DataError(f"missing values: {cell_list(cells, total)}; {hint}")


def _bad_mask(bad: Any, column: pl.Series) -> pl.Series:
    """True at the rows of ``bad`` (a :class:`~softclass.data.column_types.BadCells`)."""
    return pl.Series([False] * column.len()).scatter(bad.rows, True)


def _checked_target(
    table: pl.DataFrame, target: str | None, named: Mapping[str, Sequence[str]]
) -> str:
    """The target column (default: the last), after checking it and the columns each option
    in ``named`` (``--keep`` …) names."""
    target = table.columns[-1] if target is None and table.width else target
    check_has_columns(table, [target], "the target")
    for option, names in named.items():
        check_named_columns(table, names, option, target)
    if table.width < 2:
        raise DataError(
            f"the table has only the target column {clip(repr(target))}; at least one "
            "feature column is needed (if the file uses another delimiter, pass --delimiter)"
        )
    return target
