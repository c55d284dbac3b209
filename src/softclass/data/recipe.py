"""The preprocessing recipe: what was learned from the training table, saved beside the model.

A :class:`Recipe` is fitted once on the training table and then turns any table with the same
columns into tensors exactly the same way — at training, evaluation and prediction time, and
after a save/load round trip.

* **Features**: every column except the target, in table order. A numeric column becomes one
  output value ``(value - offset) / scale``; a categorical column becomes one 0/1 output per
  category seen in training (one-hot, categories sorted), named ``column=category``.
* **Normalization** of numeric columns: ``"zscore"`` (offset = mean, scale = population standard
  deviation), ``"minmax"`` (offset = minimum, scale = maximum - minimum, giving [0, 1] on the
  training data) or ``"divide"`` (offset = 0, scale = a constant given per column, e.g. the seed's
  age/100, income/100000, weight/1000). A constant column under zscore/minmax has scale 1, so it
  becomes all zeros on the training data instead of dividing by zero.
* **Classes**: the distinct target values in sorted order (numeric targets by value, written
  without a trailing ``.0``); class index ``i`` is ``classes[i]``.
* **Missing values** (empty cells, ``NA`` …): ``missing="error"`` (default) raises naming the
  first rows and columns; ``"drop"`` fits on complete rows, and :meth:`Recipe.prepare` drops
  incomplete rows later (reporting them); ``"impute"`` fills numeric cells with the training mean
  and categorical cells with the most frequent training category (ties: the first in sorted
  order). A missing target is never imputed: it is an error, or the row is dropped under "drop".
* NaN or infinite feature values are always an error naming the row and column.
* At prediction time missing feature columns are an error naming them; columns the recipe does
  not use are ignored, and :meth:`Recipe.prepare` reports them in its ``warnings``; the target
  column may be absent. Unknown categories and unknown classes are errors naming the value and
  the known ones.

Saved as JSON (:meth:`Recipe.save` / :meth:`Recipe.load`) with a format name and version; loading
only reads and checks data, it never executes anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import torch

from softclass.data.column_types import parse_categories, parse_numbers, type_columns
from softclass.data.messages import cell_list, did_you_mean, quoted_names, row_number
from softclass.errors import ConfigError, DataError, ModelFileError
from softclass.io import atomic_write_json

NORMALIZATIONS = ("zscore", "minmax", "divide")
MISSING_POLICIES = ("error", "drop", "impute")
RECIPE_FORMAT = "softclass-recipe"
RECIPE_VERSION = 1


@dataclass(frozen=True)
class NumericFeature:
    """A numeric input column, encoded as one value ``(value - offset) / scale``.

    ``fill_value`` replaces missing cells under ``missing="impute"`` (else None); ``mean``,
    ``std``, ``minimum`` and ``maximum`` are the training statistics of the raw column.
    """

    name: str
    offset: float
    scale: float
    fill_value: float | None
    mean: float
    std: float
    minimum: float
    maximum: float
    kind: ClassVar[str] = "numeric"

    @property
    def output_names(self) -> tuple[str, ...]:
        """The names of the output columns this feature produces: just its own name."""
        return (self.name,)


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


Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True)
class PreparedTable:
    """A table turned into tensors by :meth:`Recipe.prepare`.

    Attributes:
        features: float32 (N, F) encoded features of the kept rows.
        targets: int64 (N,) class indices, or None when the table has no target column.
        rows: int64 (N,) 0-based position in the input table of each kept row.
        warnings: what the user should hear about: ignored columns, dropped rows.
    """

    features: torch.Tensor
    targets: torch.Tensor | None
    rows: torch.Tensor
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Recipe:
    """What was learned from a training table; see the module docstring for the rules.

    Attributes:
        target: name of the target column.
        classes: class names in index order (sorted).
        class_counts: training rows per class, aligned with ``classes``.
        features: the input columns in table order.
        normalization: "zscore", "minmax" or "divide".
        missing: "error", "drop" or "impute".
        n_rows: training rows the recipe was fitted on (after dropping incomplete rows).
    """

    target: str
    classes: tuple[str, ...]
    class_counts: tuple[int, ...]
    features: tuple[Feature, ...]
    normalization: str
    missing: str
    n_rows: int

    @classmethod
    def fit(
        cls,
        table: pl.DataFrame,
        target: str | None = None,
        *,
        normalization: str = "zscore",
        divisors: Mapping[str, float] | None = None,
        missing: str = "error",
    ) -> Recipe:
        """Learn a recipe from a training table.

        Args:
            table: the training table (from :func:`softclass.data.read_table` or any polars
                DataFrame; text columns are typed by :mod:`softclass.data.column_types`).
            target: name of the target column; default the last column.
            normalization: "zscore" (default), "minmax" or "divide".
            divisors: with normalization="divide", the constant for every numeric feature
                column, e.g. ``{"age": 100, "income": 100_000, "weight": 1000}``.
            missing: "error" (default), "drop" or "impute".

        Raises:
            ConfigError: an unknown normalization or missing policy, or divisors that do not
                match the numeric feature columns.
            DataError: unknown target column, no feature column, missing values under "error",
                a missing target under "impute", NaN/inf features, fewer than two classes, or no
                rows left.
        """
        _check_choice("normalization", normalization, NORMALIZATIONS)
        _check_choice("missing", missing, MISSING_POLICIES)
        target = table.columns[-1] if target is None and table.width else target
        _check_has_columns(table, [target], "the target")
        if table.width < 2:
            raise DataError(
                f"the table has only the target column {target!r}; at least one feature column "
                "is needed"
            )
        table = type_columns(table)
        columns = {name: table.get_column(name) for name in table.columns if name != target}
        labels = _class_labels(table.get_column(target))
        scales = _checked_divisors(normalization, divisors, columns)

        keep = _complete_rows(columns, labels, missing)
        if keep is not None:
            columns = {name: column.filter(keep) for name, column in columns.items()}
            labels = labels.filter(keep)
        if labels.len() == 0:
            raise DataError("no rows are left after dropping the rows with missing values")
        _check_finite(columns, keep)
        empty = [name for name, column in columns.items() if column.null_count() == column.len()]
        if empty:
            raise DataError(
                f"the column(s) {quoted_names(empty)} have no values (every cell is missing); "
                "remove them or choose them out of the table"
            )

        classes, class_counts = _sorted_classes(table.get_column(target), labels)
        if len(classes) < 2:
            raise DataError(
                f"the target column {target!r} has only one class ({classes[0]!r}); a "
                "classifier needs at least two"
            )
        features = tuple(
            _fit_numeric(column, normalization, scales, missing)
            if column.dtype.is_numeric()
            else _fit_categorical(column, missing)
            for column in columns.values()
        )
        return cls(
            target=target,
            classes=classes,
            class_counts=class_counts,
            features=features,
            normalization=normalization,
            missing=missing,
            n_rows=labels.len(),
        )

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

    def transform(self, table: pl.DataFrame) -> torch.Tensor:
        """Encode the feature columns of ``table``: float32 tensor of shape (N, F).

        Columns the recipe does not use (and the target) are ignored. Missing cells are filled
        under ``missing="impute"`` and an error otherwise (use :meth:`prepare` to drop them).

        Raises:
            DataError: a feature column is absent, a cell is missing (not imputed), a numeric
                cell is not a finite number, or a category was not seen in training.
        """
        columns = self._feature_columns(table)
        self._check_no_missing(columns)
        return self._encode(columns, keep=None)

    def encode_targets(self, table: pl.DataFrame) -> torch.Tensor:
        """Class indices of the target column: int64 tensor of shape (N,), in ``classes`` order.

        Raises:
            DataError: the target column is absent, a target is missing, or a class was not seen
                in training.
        """
        return self._class_indices(self._target_labels(table), keep=None)

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
        """Columns of ``table`` that are neither a feature nor the target (they are ignored)."""
        used = {feature.name for feature in self.features} | {self.target}
        return [name for name in table.columns if name not in used]

    def prepare(self, table: pl.DataFrame) -> PreparedTable:
        """Features, targets (when the target column is present) and warnings for a table.

        Under ``missing="drop"`` incomplete rows (a missing feature, or a missing target when the
        target column is present) are dropped; ``rows`` says which input rows were kept and a
        warning names the dropped ones. Unused columns are ignored with a warning. Row numbers in
        errors refer to ``table`` as given.

        Raises:
            DataError: as :meth:`transform` and :meth:`encode_targets`.
        """
        warnings = []
        unused = self.unused_columns(table)
        if unused:
            warnings.append(f"ignoring column(s) not used by the model: {quoted_names(unused)}")
        columns = self._feature_columns(table)
        labels = self._target_labels(table) if self.target in table.columns else None
        keep = None
        if self.missing == "drop":
            incomplete = pl.repeat(False, table.height, eager=True)
            for column in [*columns.values(), *([] if labels is None else [labels])]:
                incomplete = incomplete | column.is_null()
            if incomplete.any():
                warnings.append(_dropped_rows_warning(incomplete.arg_true()))
                keep = ~incomplete
                columns = {name: column.filter(keep) for name, column in columns.items()}
                labels = None if labels is None else labels.filter(keep)
        self._check_no_missing(columns)
        rows = torch.arange(table.height, dtype=torch.int64)
        return PreparedTable(
            features=self._encode(columns, keep),
            targets=None if labels is None else self._class_indices(labels, keep),
            rows=rows if keep is None else rows[torch.from_numpy(keep.to_numpy())],
            warnings=tuple(warnings),
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
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> Recipe:
        """Rebuild a recipe from :meth:`to_dict`'s output, checking every field.

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

    def _feature_columns(self, table: pl.DataFrame) -> dict[str, pl.Series]:
        """The feature columns of ``table`` typed as in training (missing cells as null)."""
        _check_has_columns(table, [feature.name for feature in self.features], "feature")
        return {
            feature.name: (
                parse_numbers(table.get_column(feature.name))
                if feature.kind == "numeric"
                else parse_categories(table.get_column(feature.name))
            )
            for feature in self.features
        }

    def _target_labels(self, table: pl.DataFrame) -> pl.Series:
        _check_has_columns(table, [self.target], "the target")
        return _class_labels(type_columns(table.select(self.target)).get_column(self.target))

    def _check_no_missing(self, columns: dict[str, pl.Series]) -> None:
        if self.missing == "impute":
            return
        cells, total = _missing_cells(columns)
        if cells:
            hint = (
                "use Recipe.prepare(table), which drops incomplete rows and reports them"
                if self.missing == "drop"
                else "fill them in (the recipe was fitted with missing='error')"
            )
            raise DataError(f"missing values: {cell_list(cells, total)}; {hint}")

    def _encode(self, columns: dict[str, pl.Series], keep: pl.Series | None) -> torch.Tensor:
        """Impute, check and encode typed feature columns into a float32 (N, F) tensor.

        ``keep`` (when rows were dropped) maps positions back to the caller's table for errors.
        """
        blocks = []
        for feature in self.features:
            column = columns[feature.name]
            if feature.fill_value is not None:
                column = column.fill_null(feature.fill_value)
            if isinstance(feature, NumericFeature):
                _check_finite({feature.name: column}, keep)
                blocks.append(((column - feature.offset) / feature.scale).to_numpy()[:, None])
            else:
                _check_known_categories(column, feature, keep)
                blocks.append(
                    np.stack(
                        [(column == category).to_numpy() for category in feature.categories],
                        axis=1,
                    )
                )
        matrix = np.concatenate(blocks, axis=1).astype(np.float32)
        return torch.from_numpy(matrix)

    def _class_indices(self, labels: pl.Series, keep: pl.Series | None) -> torch.Tensor:
        missing_rows = labels.is_null().arg_true()
        if missing_rows.len():
            rows = ", ".join(str(row_number(_source_index(i, keep))) for i in missing_rows.head(5))
            raise DataError(
                f"the target column {self.target!r} is empty in row(s) {rows}; every row needs a "
                "class to be trained or evaluated on"
            )
        unknown = ~labels.is_in(self.classes)
        if unknown.any():
            position = int(unknown.arg_true()[0])
            raise DataError(
                f"row {row_number(_source_index(position, keep))}, column {self.target!r}: "
                f"unknown class {labels[position]!r}; the classes seen in training are "
                f"{quoted_names(self.classes)}"
            )
        lookup = {name: position for position, name in enumerate(self.classes)}
        indices = labels.replace_strict(lookup, return_dtype=pl.Int64)
        return torch.from_numpy(indices.to_numpy().astype(np.int64))


def _source_index(position: int, keep: pl.Series | None) -> int:
    """The row index in the caller's table of row ``position`` of a table filtered by ``keep``."""
    return int(position) if keep is None else int(keep.arg_true()[int(position)])


def _dropped_rows_warning(dropped: pl.Series) -> str:
    shown = ", ".join(str(row_number(index)) for index in dropped.head(10))
    more = f" and {dropped.len() - 10} more" if dropped.len() > 10 else ""
    return f"dropped {dropped.len()} row(s) with missing values: rows {shown}{more}"


def _check_choice(option: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{option}={value!r} is not allowed; expected one of {quoted_names(allowed)}"
        )


def _check_has_columns(table: pl.DataFrame, names: Sequence[object], role: str) -> None:
    absent = [name for name in names if name not in table.columns]
    if not absent:
        return
    available = f"the table's columns are {quoted_names(table.columns)}"
    if role == "the target":
        name = absent[0]
        hint = did_you_mean(name, table.columns) if isinstance(name, str) else ""
        raise DataError(f"no column {name!r} to use as the target{hint}; {available}")
    raise DataError(f"the table lacks the {role} column(s) {quoted_names(absent)}; {available}")


def _class_labels(target: pl.Series) -> pl.Series:
    """Target values as class-name strings (null where missing)."""
    if not target.dtype.is_numeric():
        return parse_categories(target)
    non_finite = target.is_nan() | target.is_infinite()
    if non_finite.any():
        index = int(non_finite.arg_true()[0])
        raise DataError(
            f"row {row_number(index)}, column {target.name!r}: the class {target[index]!r} is "
            "not a finite number"
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
    counts = dict(zip(*labels.value_counts().to_dict(as_series=False).values(), strict=True))
    if target.dtype.is_numeric():
        classes = tuple(sorted(counts, key=float))
    else:
        classes = tuple(sorted(counts))
    return classes, tuple(int(counts[name]) for name in classes)


def _checked_divisors(
    normalization: str,
    divisors: Mapping[str, float] | None,
    columns: dict[str, pl.Series],
) -> dict[str, float]:
    numeric = [name for name, column in columns.items() if column.dtype.is_numeric()]
    if normalization != "divide":
        if divisors:
            raise ConfigError(
                f"divisors are only used with normalization='divide', not {normalization!r}"
            )
        return {}
    divisors = dict(divisors or {})
    lacking = [name for name in numeric if name not in divisors]
    if lacking:
        raise ConfigError(
            f"normalization='divide' needs a divisor for every numeric feature column; missing "
            f"for {quoted_names(lacking)}"
        )
    unknown = [name for name in divisors if name not in numeric]
    if unknown:
        raise ConfigError(
            f"divisors given for {quoted_names(unknown)}, which are not numeric feature columns; "
            f"the numeric feature columns are {quoted_names(numeric)}"
        )
    for name, divisor in divisors.items():
        if isinstance(divisor, bool) or not isinstance(divisor, int | float):
            raise ConfigError(f"the divisor for {name!r} must be a number, got {divisor!r}")
        if not math.isfinite(divisor) or divisor == 0:
            raise ConfigError(
                f"the divisor for {name!r} must be a finite nonzero number, got {divisor!r}"
            )
    return {name: float(divisor) for name, divisor in divisors.items()}


def _missing_cells(columns: dict[str, pl.Series]) -> tuple[list[tuple[int, str]], int]:
    """The first missing cells in row-major order, and how many there are in all."""
    cells: list[tuple[int, int, str]] = []
    total = 0
    for position, (name, column) in enumerate(columns.items()):
        missing_rows = column.is_null().arg_true()
        total += missing_rows.len()
        cells.extend((int(index), position, name) for index in missing_rows.head(5))
    cells.sort()
    return [(index, name) for index, _, name in cells], total


def _complete_rows(
    columns: dict[str, pl.Series], labels: pl.Series, missing: str
) -> pl.Series | None:
    """Apply the missing policy at fit time: the rows to keep (None: all), or raise."""
    missing_targets = labels.is_null()
    if missing_targets.any() and missing != "drop":
        cells, total = _missing_cells({labels.name: labels})
        raise DataError(
            f"missing class in the target column: {cell_list(cells, total)}; remove those rows "
            "or use missing='drop'"
        )
    cells, total = _missing_cells(columns)
    if cells and missing == "error":
        raise DataError(
            f"missing values: {cell_list(cells, total)}; fill them in, or use missing='drop' to "
            "skip those rows or missing='impute' to fill them with the training mean (numeric) "
            "or the most frequent category"
        )
    if missing != "drop" or not (cells or missing_targets.any()):
        return None
    incomplete = missing_targets
    for column in columns.values():
        incomplete = incomplete | column.is_null()
    return ~incomplete


def _check_finite(columns: dict[str, pl.Series], keep: pl.Series | None) -> None:
    """Raise on the first NaN/inf numeric cell; ``keep`` maps rows back as in ``_encode``."""
    for name, column in columns.items():
        if not column.dtype.is_numeric():
            continue
        bad = (column.is_nan() | column.is_infinite()).fill_null(False)
        if bad.any():
            position = int(bad.arg_true()[0])
            raise DataError(
                f"row {row_number(_source_index(position, keep))}, column {name!r}: "
                f"{column[position]!r} is not a finite number; features must be finite"
            )


def _check_known_categories(
    column: pl.Series, feature: CategoricalFeature, keep: pl.Series | None
) -> None:
    unknown = (~column.is_in(feature.categories)).fill_null(False)
    if unknown.any():
        position = int(unknown.arg_true()[0])
        raise DataError(
            f"row {row_number(_source_index(position, keep))}, column {feature.name!r}: unknown "
            f"category {column[position]!r}; the categories seen in training are "
            f"{quoted_names(feature.categories)}"
        )


def _fit_numeric(
    column: pl.Series, normalization: str, divisors: dict[str, float], missing: str
) -> NumericFeature:
    present = column.drop_nulls()
    mean = float(present.mean())
    std = float(present.std(ddof=0))
    minimum = float(present.min())
    maximum = float(present.max())
    if normalization == "zscore":
        offset, scale = mean, std
    elif normalization == "minmax":
        offset, scale = minimum, maximum - minimum
    else:
        offset, scale = 0.0, divisors[column.name]
    return NumericFeature(
        name=column.name,
        offset=offset,
        scale=scale if scale != 0 else 1.0,
        fill_value=mean if missing == "impute" else None,
        mean=mean,
        std=std,
        minimum=minimum,
        maximum=maximum,
    )


def _fit_categorical(column: pl.Series, missing: str) -> CategoricalFeature:
    counted = column.drop_nulls().value_counts().to_dict(as_series=False)
    counts = dict(zip(counted[column.name], counted["count"], strict=True))
    categories = tuple(sorted(counts))
    most_frequent = min(categories, key=lambda category: (-counts[category], category))
    return CategoricalFeature(
        name=column.name,
        categories=categories,
        counts=tuple(int(counts[category]) for category in categories),
        fill_value=most_frequent if missing == "impute" else None,
    )


def _feature_to_dict(feature: Feature) -> dict[str, Any]:
    if isinstance(feature, NumericFeature):
        return {
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
        if version != RECIPE_VERSION:
            raise ModelFileError(
                f"{self.source}: recipe format version {version} cannot be read by this softclass, "
                f"which reads version {RECIPE_VERSION}"
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
        return Recipe(
            target=target,
            classes=classes,
            class_counts=self.counts(data, "class_counts", len(classes)),
            features=features,
            normalization=normalization,
            missing=missing,
            n_rows=self.count(data, "n_rows"),
        )

    def feature(self, data: Any, where: str, missing: str) -> Feature:
        if not isinstance(data, dict):
            raise self.fail(where.rstrip("."), "a JSON object", data)
        kind = self.text(data, "kind", where)
        name = self.text(data, "name", where)
        needs_fill = missing == "impute"
        if kind == "numeric":
            scale = self.number(data, "scale", where)
            if scale == 0:
                raise self.fail(where + "scale", "a nonzero number", scale)
            fill_value = self.field(data, "fill_value", where)
            if needs_fill or fill_value is not None:
                fill_value = self.number(data, "fill_value", where)
            return NumericFeature(
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
