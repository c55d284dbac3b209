"""A table turned into tensors, and the rows left out on the way with their reasons."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl
import torch

if TYPE_CHECKING:
    from softclass.data.expansion import FeatureRows

from softclass.data.features import CategoricalFeature, Feature, unusable_numbers
from softclass.data.messages import ROW_NUMBERING, clip, row_number


@dataclass(frozen=True)
class PreparedTable:
    """A table turned into tensors by :meth:`Recipe.prepare`.

    Attributes:
        features: float32 (N, F) encoded features of the kept rows (with
            ``Recipe.prepare(compact=True)`` and bins: :class:`FeatureRows`, the same rows kept
            compact).
        targets: int64 (N,) class indices, or None when the target column is absent or ignored.
        rows: int64 (N,) 0-based position in the input table of each kept row.
        warnings: what the user should hear about: ignored columns, dropped and skipped rows,
            unknown categories.
        skipped: ``(0-based row, reason)`` of each row left out under ``on_error="skip"``.
        unknown_categories: per column, the number of cells with a category not seen in
            training (encoded as all zeros under ``unknown="ignore"``).
    """

    features: torch.Tensor | FeatureRows
    targets: torch.Tensor | None
    rows: torch.Tensor
    warnings: tuple[str, ...]
    skipped: tuple[tuple[int, str], ...] = ()
    unknown_categories: Mapping[str, int] = field(default_factory=dict)


def unlabelled_rows(labels: pl.Series, classes: Sequence[str], bad: dict[int, str]) -> None:
    """Add to ``bad`` each row whose class is not one of ``classes`` (rows without one are left
    out apart)."""
    for index in (~labels.is_in(classes)).fill_null(False).arg_true().to_list():
        bad.setdefault(
            index, f"column {clip(repr(labels.name))}: unknown class {clip(repr(labels[index]))}"
        )


def unusable_rows(
    features: Sequence[Feature], inputs: Mapping[str, pl.Series], unknown: str, bad: dict[int, str]
) -> None:
    """Add to ``bad`` each row with a number that is not usable or (``unknown="error"``) an
    unknown category."""
    for name, column in inputs.items():
        if column.dtype.is_numeric():
            for index in unusable_numbers(column).arg_true().to_list():
                bad.setdefault(index, f"column {clip(repr(name))}: {column[index]!r} is not usable")
    if unknown == "error":
        for feature in features:
            if isinstance(feature, CategoricalFeature) and not feature.other:
                column = inputs[feature.name]
                unseen = (~column.is_in(feature.categories)).fill_null(False)
                for index in unseen.arg_true().to_list():
                    bad.setdefault(
                        index,
                        f"column {clip(repr(feature.name))}: unknown category "
                        f"{clip(repr(column[index]))}",
                    )


def skipped_rows_warning(skipped: Sequence[tuple[int, str]]) -> str:
    shown = "; ".join(f"row {row_number(index)} ({reason})" for index, reason in skipped[:3])
    more = f" … and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return f"skipped {len(skipped)} row(s) (--on-error skip): {shown}{more} ({ROW_NUMBERING})"


def unknown_categories_warning(counts: Mapping[str, int]) -> str:
    parts = [f"{clip(repr(name))} {count}" for name, count in counts.items()]
    shown = ", ".join(parts[:5]) + (f" … and {len(parts) - 5} more" if len(parts) > 5 else "")
    return (
        f"categories not seen in training, encoded as all zeros (cells per column): {shown}; "
        "--unknown error refuses them"
    )
