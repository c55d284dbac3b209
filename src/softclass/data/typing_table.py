"""The typing table: every training column with its kind, role, action and counts.

Each column of the training table has a kind (number, boolean, date, text —
:mod:`softclass.data.column_types`) and a role: ``"target"``; ``"feature"``; ``"id"`` (``--id
COL``: not a feature, carried into predictions); or ``"dropped"`` (``--drop COL``, or ID-like: a
text column whose distinct values exceed :data:`ID_FRACTION` of its rows, or an integer column
with a distinct value per row that counts up by one or is named like an id — unless ``--keep
COL``; tables under :data:`ID_MIN_ROWS` rows keep every column).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from softclass.data.checks import check_has_columns
from softclass.data.column_types import (
    BOOLEAN,
    DATE,
    NUMBER,
    TEXT,
    ColumnType,
    TypingOptions,
    infer_column_type,
    read_column,
    type_column,
)
from softclass.data.features import CategoricalFeature, Feature
from softclass.data.target import as_target_type
from softclass.errors import DataError

ROLES = ("target", "feature", "id", "dropped")
ID_FRACTION = 0.5
"""A text column with more distinct values than this share of its rows is ID-like (dropped)."""
ID_MIN_ROWS = 20
"""Tables with fewer rows drop no column as ID-like."""
EXACT_DISTINCT_ROWS = 100_000
"""Number and date columns longer than this have their distinct count in the typing table
estimated (HyperLogLog, polars ``approx_n_unique``): five times faster than counting."""
_ID_NAME = re.compile(r"(?i)^(id|key|index|idx|row|uuid)$|(^|[_\s.-])(id|key|idx)$|^id[_\s.-]")


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
    check_has_columns(table, [target], "the target")
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
            column_type = as_target_type(column_type)
            typed = read_column(column, column_type, typing.missing_markers)[0]
        types.append(column_type)
        columns.append(typed)
    return pl.DataFrame(columns), tuple(types)


def id_like_reason(column: pl.Series, column_type: ColumnType) -> str | None:
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


def column_table(
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
