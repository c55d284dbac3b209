"""The typing table: every training column with its kind, role, action and counts.

Each column of the training table has a kind (number, boolean, date, text —
:mod:`softclass.data.column_types`) and a role: ``"target"``; ``"feature"``; ``"id"`` (``--id
COL``: not a feature, carried into predictions); or ``"dropped"`` (``--drop COL``, or ID-like).

**ID-like columns** (row numbers and identifiers) are dropped, whatever the row order, unless
``--keep COL`` names them:

* by name (:data:`ID_NAME`, case-insensitive): ``rownames``, ``row.names``, ``Unnamed: 0`` (a
  pandas index written by ``to_csv``), ``index``, ``id``, ``key``, ``row``, ``uuid``, a name
  ending in ``_id``/``.id``/`` id`` or ``ID`` after a lower-case letter (``BirdID``), a name
  ending in ``_no``/``_nr``, and the numbering words ``seqno``, ``idno``, ``patnr``, ``caseno``,
  ``obsno``, ``subjno`` (any of ``no``, ``nr``, ``num``, ``number`` after ``seq``, ``id``,
  ``case``, ``obs``, ``subj``, ``pat``, ``row``, ``rec``, ``record``, ``serial``);
* by value, in tables of at least :data:`ID_MIN_ROWS` rows: a number column of whole numbers,
  distinct on every row, whose range (max - min + 1) is at most :data:`ID_RANGE_FACTOR` times the
  row count (row numbers 1..N still are after any shuffle or split); or a text column whose
  distinct values exceed :data:`ID_FRACTION` of its rows (a name, a code per row).
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from softclass.data.checks import check_has_columns, check_named_columns
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
from softclass.data.features import OTHER_CATEGORY, CategoricalFeature, Feature
from softclass.data.missing import INDICATOR_PART, MISSING_CATEGORY
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
TYPING_THREADS = 2
"""Columns typed at once by :func:`typed_table` (at most the CPU count)."""
OWN_PAGES_ROWS = 1 << 17
"""Typed Float64 columns at least this long are held in pages of their own (1 MiB and more)."""
ID_RANGE_FACTOR = 2.0
"""A column of distinct whole numbers whose range is at most this many times its row count is
ID-like: 1..N sampled at any fraction above a half, in any order."""
ID_NAME = re.compile(
    r"(?i)^(?:rownames|row[._ ]names|unnamed: ?\d+|index|idx|id|key|row|uuid)$"
    r"|[_\s.-](?:id|key|idx|no|nr)$|^id[_\s.-]"
    r"|^(?:seq|id|case|obs|subj|pat|row|rec|record|serial)[_.]?(?:no|nr|num|number)$"
)
"""Column names that say "row number or identifier" (see the module docstring)."""
_CAMEL_ID = re.compile(r"[a-z]ID$")  # BirdID, PatientID (case-sensitive: "paid" is no ID)


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
            "words_as_missing": self.type.words_as_missing,
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
    for option, names in (("--categorical", typing.categorical), ("--numeric", typing.numeric)):
        check_named_columns(table, names, option, None)
    skipped = {*drop, *ids}

    def typed_column(name: str) -> tuple[ColumnType | None, pl.Series]:
        column = table.get_column(name)
        if name in skipped:
            return None, column
        if name == target:
            column_type, typed = type_target(column, source, typing)
        else:
            column_type, typed = type_column(column, source, typing)
        return column_type, _in_own_pages(typed)

    # polars and pyarrow let go of the GIL: columns typed side by side (the first error in
    # column order raised, as one at a time)
    with ThreadPoolExecutor(min(TYPING_THREADS, os.cpu_count() or 1)) as pool:
        typed = list(pool.map(typed_column, table.columns))
    types = tuple(column_type for column_type, _ in typed if column_type is not None)
    return pl.DataFrame([column for _, column in typed]), types


def type_target(
    column: pl.Series, source: str, typing: TypingOptions
) -> tuple[ColumnType, pl.Series]:
    """The target column's type and values: :func:`type_column`'s, read again as a target is
    (:func:`as_target_type`: a number or text) where that type differs.

    Raises:
        DataError: as :func:`type_column`.
    """
    column_type, typed = type_column(column, source, typing)
    if as_target_type(column_type) != column_type:
        column_type = as_target_type(column_type)
        typed = read_column(column, column_type, typing.missing_markers)[0]
    return column_type, typed


def _in_own_pages(column: pl.Series) -> pl.Series:
    """A long Float64 column moved into pages of its own (an anonymous memory map, unmapped when
    the column is freed), the same values and missing cells: polars' allocator keeps the pages
    of a freed column for about a second, so the typed numbers freed while the features are
    encoded would otherwise still be held while the features are written."""
    if column.dtype != pl.Float64 or column.len() < OWN_PAGES_ROWS:
        return column
    values = np.frombuffer(mmap.mmap(-1, column.len() * 8), dtype=np.float64)
    values[:] = column.to_numpy()  # missing cells NaN, then null again
    mask = column.is_null().to_numpy() if column.null_count() else None
    return pl.from_arrow(pa.array(values, mask=mask)).alias(column.name)


def left_out_columns(
    typed: Mapping[str, pl.Series],
    types: Mapping[str, ColumnType],
    keep: Sequence[str],
    labelled: pl.Series,
) -> dict[str, str]:
    """The feature candidates left out, each with the reason the typing table gives: ID-like
    (unless in ``keep``) or without a single value in the ``labelled`` rows."""
    left_out = {}
    for name, column in typed.items():
        if column.filter(labelled).null_count() == labelled.sum():
            left_out[name] = "no values (every cell is missing)"
        elif name not in keep and (reason := id_like_reason(column, types[name])):
            left_out[name] = f"ID-like ({reason})"
    return left_out


def id_like_frame_columns(frame: Any, keep: Sequence[str] = ()) -> dict[str, str]:
    """The ID-like number columns of a pandas or polars frame of features, by the rule of the
    module docstring (name or values), except those in ``keep``: ``{name: reason}``."""
    found = {}
    for name in frame.columns:
        values = np.asarray(frame[name])
        if name in keep or values.dtype.kind not in "iuf":
            continue
        column = pl.Series(str(name), values.astype(np.float64), nan_to_null=True)
        reason = id_like_reason(column, ColumnType(str(name), NUMBER))
        if reason is not None:
            found[name] = reason
    return found


def id_like_reason(column: pl.Series, column_type: ColumnType) -> str | None:
    """Why a typed feature column looks like a row number or identifier, or None."""
    if ID_NAME.search(column.name) or _CAMEL_ID.search(column.name):
        return "row number or identifier by its name"
    present = column.drop_nulls()
    n_rows = present.len()
    if n_rows < ID_MIN_ROWS:
        return None
    if column_type.kind == TEXT:
        n_distinct = present.n_unique()
        if n_distinct > ID_FRACTION * n_rows:
            return f"{n_distinct} distinct in {n_rows} rows"
        return None
    if column_type.kind != NUMBER or column.null_count() or not bool((present % 1 == 0).all()):
        return None
    if present.n_unique() != n_rows:
        return None
    low, high = float(present.min()), float(present.max())
    if high - low + 1 <= ID_RANGE_FACTOR * n_rows:
        return f"distinct whole numbers {low:g} to {high:g} in {n_rows} rows"
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
                role, action = "dropped", f"dropped: {id_like[name]}"
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
        action = f"one-hot, {len(feature.categories)} categories"
        if feature.other:
            action += f" (the rarest as {OTHER_CATEGORY!r})"
        if feature.fill_value == MISSING_CATEGORY:
            action += f"; missing: category {MISSING_CATEGORY!r}"
        return action
    scaling = (
        f"divided by {feature.scale:g}"
        if normalization == "divide" and column_type.kind == NUMBER
        else f"scaled ({'zscore' if normalization == 'divide' else normalization})"
    )
    binned = max((len(getattr(item, "edges", ())) - 1 for item in features), default=0)
    if binned > 0:
        scaling += f" + up to {binned} bins" if column_type.kind == DATE else f" + {binned} bins"
    if column_type.kind == DATE:
        scaling = f"year, month, weekday; {scaling}"
    elif column_type.kind == BOOLEAN:
        scaling = f"{column_type.boolean_texts[0]} = 1; {scaling}"
    indicators = [item.name for item in features if getattr(item, "part", None) == INDICATOR_PART]
    if indicators:
        fill = f"median {feature.fill_value:g}" if column_type.kind != DATE else "medians"
        scaling += f"; missing: {fill}, indicator {indicators[0]!r}"
    return scaling


def typed_candidates(
    table: pl.DataFrame,
    candidates: Sequence[str],
    known: Mapping[str, ColumnType],
    typing: TypingOptions,
) -> tuple[dict[str, ColumnType], dict[str, pl.Series]]:
    """The type and the typed cells of each feature candidate (read once when already typed)."""
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
        typed[name], bad = read_column(column, column_type, typing.missing_markers)
        if bad is not None:
            raise DataError(bad.message("the table"))
    return types, typed
