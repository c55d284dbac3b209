"""The target column: class labels, their order, and the checks of a classification target.

**Classes** are the distinct target values in sorted order (numeric targets by value, written
without a trailing ``.0``); class index ``i`` is ``classes[i]``. A numeric target with more than
:data:`MAX_NUMERIC_CLASSES` distinct values that are also more than :data:`CONTINUOUS_FRACTION`
of its rows looks continuous and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import torch

from softclass.data.checks import source_index
from softclass.data.column_types import NUMBER, TEXT, ColumnType
from softclass.data.messages import clip, quoted_names, row_number
from softclass.errors import DataError

MAX_NUMERIC_CLASSES = 20
"""A numeric target with more distinct values than this (and than CONTINUOUS_FRACTION of the
rows) looks continuous."""
CONTINUOUS_FRACTION = 0.05


def as_target_type(column_type: ColumnType) -> ColumnType:
    """A target is read as numbers or as text labels (booleans, dates and columns mixing numbers
    and words keep their text): every distinct value is a class."""
    if column_type.kind == TEXT or (
        column_type.kind == NUMBER and not column_type.words_as_missing
    ):
        return column_type
    return ColumnType(column_type.name, TEXT)


def class_labels(target: pl.Series) -> pl.Series:
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


def sorted_classes(target: pl.Series, labels: pl.Series) -> tuple[tuple[str, ...], tuple[int, ...]]:
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


def target_notes(
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


def class_indices(
    labels: pl.Series, classes: Sequence[str], keep: pl.Series | None
) -> torch.Tensor:
    missing_rows = labels.is_null().arg_true()
    if missing_rows.len():
        rows = ", ".join(str(row_number(source_index(i, keep))) for i in missing_rows.head(5))
        more = f" and {missing_rows.len() - 5} more" if missing_rows.len() > 5 else ""
        raise DataError(
            f"the target column {clip(repr(labels.name))} is empty in row(s) {rows}{more}; "
            "every row needs a class to be trained or evaluated on"
        )
    unknown = ~labels.is_in(classes)
    if unknown.any():
        position = int(unknown.arg_true()[0])
        raise DataError(
            f"row {row_number(source_index(position, keep))}, column "
            f"{clip(repr(labels.name))}: unknown class {clip(repr(labels[position]))}; the "
            f"classes seen in training are {quoted_names(classes)}"
        )
    lookup = {name: position for position, name in enumerate(classes)}
    indices = labels.replace_strict(lookup, return_dtype=pl.Int64)
    return torch.from_numpy(indices.to_numpy().astype(np.int64))
