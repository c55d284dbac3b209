"""Features: the numeric and one-hot outputs a recipe makes of the feature columns.

* A number or boolean (1/0) column becomes one output value ``(value - offset) / scale``; a date
  column three (``col.year``, ``col.month``, ``col.day_of_week`` with Monday = 1), scaled the same
  way; a text column one 0/1 output per category seen in training (one-hot, categories sorted),
  named ``column=category``.
* **Normalization** of numeric outputs: ``"zscore"`` (offset = mean, scale = population standard
  deviation), ``"minmax"`` (offset = minimum, scale = maximum - minimum) or ``"divide"`` (offset =
  0, scale = a constant given per number column, e.g. the seed's age/100, income/100000,
  weight/1000; boolean and date outputs are z-scored) or ``"robust"`` (offset = median, scale =
  the interquartile range, or half the range when that is 0, then smoothly clipped to
  ±:data:`SMOOTH_CLIP`: an outlier or a long tail no longer squeezes the other values into a
  sliver). A constant output has scale 1, so it becomes all zeros on the training data instead
  of dividing by zero.
* **Bins** (``bins`` > 0, RealMLP / Gorishniy et al. 2022's piecewise-linear encoding): a
  number or date output with more than two distinct training values also gets one output per
  quantile bin [e_k, e_k+1] of its training values, clip((value - e_k) / (e_k+1 - e_k), 0, 1):
  0 below the bin, 1 above, linear inside. A network reads a threshold ("more than 36") from
  one such output instead of learning it from one scaled number.
* NaN, infinite and out-of-float32-range feature values are an error naming the row and column.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import polars as pl
import torch

from softclass.data.checks import source_index
from softclass.data.column_types import BOOLEAN, DATE, FLOAT32_MAX, NUMBER, ColumnType
from softclass.data.messages import clip, quoted_names, row_number
from softclass.data.missing import INDICATOR_PART, MISSING_CATEGORY, complete_rows
from softclass.errors import ConfigError, DataError

NORMALIZATIONS = ("zscore", "minmax", "divide", "robust")
SMOOTH_CLIP = 3.0
"""Under ``"robust"`` a scaled value z becomes z / sqrt(1 + (z / SMOOTH_CLIP)²): about z near 0,
never beyond ±SMOOTH_CLIP (RealMLP's smooth clipping, Holzmüller et al. 2024)."""
DATE_PARTS = ("year", "month", "day_of_week")
"""The numeric features a date column becomes (``col.year`` …; day of week: Monday = 1)."""
MAX_ONE_HOT = 200
"""A text column with more categories keeps its MAX_ONE_HOT - 1 most frequent ones (ties: sorted
first) and counts the others as the one category OTHER_CATEGORY, so that a column of names or
codes (13,900 pet names in 52,519 rows) does not become thousands of outputs per row."""
OTHER_CATEGORY = "(other)"
_ENCODE_BLOCK_VALUES = 1 << 22  # feature values per block of rows being encoded (16 MiB)
_ROW_BY_ROW_CATEGORIES = 64  # up to this many categories, one-hot rows are written one by one


@dataclass(frozen=True)
class NumericFeature:
    """A numeric output, ``(value - offset) / scale``.

    ``column`` is the table column it comes from (None: the column called ``name``) and ``part``
    the date part for a date column, ``"missing"`` for the 0/1 missing indicator of ``column``
    (None otherwise). ``clip``: the bound of the smooth clipping applied after scaling
    (normalization ``"robust"``; None: none). ``edges``: the increasing bin edges of the
    piecewise-linear encoding (``bins``; empty: none). ``fill_value`` replaces missing values under
    ``missing="impute"`` (the training median; else None); ``mean``, ``std``, ``minimum`` and
    ``maximum`` are the training statistics of the raw value.
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
    clip: float | None = None
    edges: tuple[float, ...] = ()
    kind: ClassVar[str] = "numeric"

    @property
    def output_names(self) -> tuple[str, ...]:
        """The names of the output columns this feature produces: its own name, then
        ``name#binK`` for each bin of its piecewise-linear encoding (none without ``edges``)."""
        return (self.name, *(f"{self.name}#bin{k}" for k in range(1, len(self.edges))))

    @property
    def source(self) -> str:
        """The table column this feature is read from."""
        return self.column or self.name


@dataclass(frozen=True)
class CategoricalFeature:
    """A categorical input column, one-hot encoded over the sorted ``categories`` seen in training.

    ``counts[i]`` is how often ``categories[i]`` occurred in training; ``fill_value`` replaces
    missing cells under ``missing="impute"`` (else None). ``other``: the column had more than
    :data:`MAX_ONE_HOT` categories; the rarer ones, and later any category not in
    ``categories``, are the category :data:`OTHER_CATEGORY`.
    """

    name: str
    categories: tuple[str, ...]
    counts: tuple[int, ...]
    fill_value: str | None
    other: bool = False
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


def encoded_rows(
    sources: Sequence[tuple[Feature, np.ndarray]],
    n_rows: int,
    width: int,
    rows: np.ndarray | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The float32 (N, F) feature matrix, written a block of rows at a time.

    ``rows``: int64 positions (N,) into the sources, encoded in that order (default: the first
    ``n_rows``); each block gathers its rows, so no row subset of the table is copied whole.
    ``out``: an (N, F) float32 view to write into (e.g. some columns of a wider matrix).

    Each block is filled output by output into contiguous rows of an (F, rows) buffer and
    transposed into place, so no full-size temporary exists beside the result (writing the
    columns of an (N, F) array one by one strides through memory and is several times slower);
    torch's transposing copy works in tiles. A number's bins: together, in float64.
    """
    matrix = torch.empty((n_rows, width), dtype=torch.float32) if out is None else out
    block_rows = max(1, _ENCODE_BLOCK_VALUES // max(width, 1))
    bounds = [_bin_bounds(feature) for feature, _ in sources]
    widest = max((len(low) for low, _ in bounds), default=0)
    scratch = np.empty((widest, block_rows), dtype=np.float64)
    work = np.empty((2, min(block_rows, n_rows)), dtype=np.float64)
    block = np.empty((width, block_rows), dtype=np.float32)
    for start in range(0, n_rows, block_rows):
        stop = min(start + block_rows, n_rows)
        count = stop - start
        position = 0
        chosen = None if rows is None else rows[start:stop]
        for index, (feature, values) in enumerate(sources):
            lows, widths = bounds[index]
            part = values[start:stop] if chosen is None else values[chosen]
            if isinstance(feature, NumericFeature):  # in place: 3x numpy's temporaries' speed
                scaled = np.subtract(part, feature.offset, out=work[0, :count])
                np.divide(scaled, feature.scale, out=scaled)
                if feature.clip is not None:  # scaled / sqrt(1 + (scaled / clip)²)
                    ratio = np.divide(scaled, feature.clip, out=work[1, :count])
                    np.sqrt(np.add(1.0, np.square(ratio, out=ratio), out=ratio), out=ratio)
                    np.divide(scaled, ratio, out=scaled)
                block[position, :count] = scaled
                position += 1
                if len(lows):
                    bins = scratch[: len(lows), :count]
                    np.subtract(part[None, :], lows, out=bins)
                    np.divide(bins, widths, out=bins)
                    np.clip(bins, 0.0, 1.0, out=bins)
                    block[position : position + len(lows), :count] = bins
                    position += len(lows)
                continue
            n_categories = len(feature.categories)
            outputs = block[position : position + n_categories, :count]
            if n_categories <= _ROW_BY_ROW_CATEGORIES:
                for index in range(n_categories):
                    np.equal(part, index, out=outputs[index], casting="unsafe")
            else:
                outputs[:] = 0.0
                known = np.flatnonzero(part >= 0)
                outputs[part[known], known] = 1.0
            position += n_categories
        matrix[start:stop].copy_(torch.from_numpy(block[:, :count]).t())  # tiled: 2-4x numpy's
    return matrix


def _bin_bounds(feature: Feature) -> tuple[np.ndarray, np.ndarray]:
    """(lower edges, widths) of a number's bins as (K, 1) float64 columns; empty without bins."""
    edges = np.asarray(getattr(feature, "edges", ()), dtype=np.float64)
    if len(edges) < 2:
        return np.empty((0, 1)), np.empty((0, 1))
    return edges[:-1, None], np.diff(edges)[:, None]


def feature_inputs(
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


def add_indicators(
    inputs: dict[str, pl.Series],
    origin: dict[str, tuple[str, str | None]],
    columns: Iterable[str],
    dtype: pl.DataType = pl.Float64,
) -> tuple[dict[str, pl.Series], dict[str, tuple[str, str | None]]]:
    """``inputs`` and ``origin`` with a 0/1 input ``col.missing`` (``dtype``) after the inputs
    of each of ``columns``: 1 where that column's cell is missing."""
    wanted = set(columns)
    with_indicators: dict[str, pl.Series] = {}
    with_origin: dict[str, tuple[str, str | None]] = {}
    names = list(inputs)
    for position, name in enumerate(names):
        with_indicators[name], with_origin[name] = inputs[name], origin[name]
        column = origin[name][0]
        is_last = position + 1 == len(names) or origin[names[position + 1]][0] != column
        if column in wanted and is_last:
            indicator = f"{column}.{INDICATOR_PART}"
            with_indicators[indicator] = inputs[name].is_null().cast(dtype).alias(indicator)
            with_origin[indicator] = (column, INDICATOR_PART)
    return with_indicators, with_origin


def stored_source(origin: tuple[str, str | None]) -> tuple[str | None, str | None]:
    """``(column, part)`` stored on a numeric feature: (None, None) for a plain column."""
    return (None, None) if origin[1] is None else origin


def checked_divisors(
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


def unusable_numbers(column: pl.Series) -> pl.Series:
    """True where a numeric value is NaN, infinite or beyond float32's range."""
    if not column.null_count() and column.len():
        with np.errstate(invalid="ignore"):
            largest = np.abs(column.to_numpy()).max()  # NaN if any value is NaN
        if largest <= FLOAT32_MAX:
            return pl.repeat(False, column.len(), eager=True)
    return (column.is_nan() | (column.abs() > FLOAT32_MAX)).fill_null(False)


def unusable_message(column: pl.Series, unusable: pl.Series, keep: pl.Series | None) -> str:
    position = int(unusable.arg_true()[0])
    value = column[position]
    problem = (
        "is not a finite number; features must be finite"
        if math.isnan(value) or math.isinf(value)
        else f"is outside float32's range (±{FLOAT32_MAX:.4g}); features are float32"
    )
    more = f" (and {unusable.sum() - 1} more in this column)" if unusable.sum() > 1 else ""
    return (
        f"row {row_number(source_index(position, keep))}, column {clip(repr(column.name))}: "
        f"{value!r} {problem}{more}"
    )


def fit_numeric(
    column: pl.Series,
    normalization: str,
    divisors: Mapping[str, float],
    missing: str,
    source: tuple[str | None, str | None],
    bins: int = 0,
) -> NumericFeature:
    mean = float(column.mean())  # polars aggregations skip missing cells
    std = float(column.std(ddof=0))
    minimum = float(column.min())
    maximum = float(column.max())
    needs_median = missing == "impute" or normalization == "robust"
    ranked = _ranked(column, bins) if needs_median or bins > 0 else column
    median = float(ranked.median()) if needs_median else 0.0
    clip = None
    if normalization == "minmax":
        offset, scale = minimum, maximum - minimum
    elif normalization == "robust":
        offset, scale, clip = robust_scale(ranked, minimum, maximum, median)
    elif normalization == "divide" and column.name in divisors:
        offset, scale = 0.0, divisors[column.name]
    else:
        offset, scale = mean, std
    return NumericFeature(
        name=column.name,
        offset=offset,
        scale=scale if scale != 0 else 1.0,
        fill_value=median if missing == "impute" else None,
        mean=mean,
        std=std,
        minimum=minimum,
        maximum=maximum,
        column=source[0],
        part=source[1],
        clip=clip,
        edges=bin_edges(ranked, bins, minimum, maximum, ranked is not column),
    )


def _ranked(column: pl.Series, bins: int) -> pl.Series:
    """The present values of ``column`` sorted once for its median, quartiles and bin edges
    (the same bits: equal values are the same bits, but for 0.0 and -0.0, whose order a sort
    may change: a column holding both stays as it is when a statistic reads near a zero)."""
    present = column.drop_nulls()
    values = present.to_numpy()
    zeros = np.signbit(values[values == 0])
    if not zeros.any() or zeros.all():
        return present.sort()
    ranked = np.sort(values)  # memory handed back when freed (polars' allocator keeps it)
    levels = np.concatenate(([0.25, 0.5, 0.75], np.linspace(0.0, 1.0, max(bins, 0) + 1)))
    below = np.floor((len(values) - 1) * levels).astype(np.intp)
    read = np.clip(below[:, None] + np.arange(-1, 3), 0, len(values) - 1)
    if np.isnan(ranked[-1]) or (ranked[read] == 0).any():
        return column
    return pl.Series(column.name, ranked).set_sorted()


def bin_edges(
    column: pl.Series, bins: int, minimum: float, maximum: float, ranked: bool = False
) -> tuple[float, ...]:
    """The distinct training quantiles 0, 1/bins, …, 1 of ``column`` (missing cells left out,
    ``minimum`` and ``maximum`` its extremes), or () when ``bins`` is 0 or they give fewer than
    two bins (a 0/1 column: no value lies strictly between the extremes). ``ranked``: the
    column is its present values sorted by :func:`_ranked`."""
    if bins <= 0:
        return ()
    present = column.drop_nulls().cast(pl.Float64)
    if not ((present > minimum) & (present < maximum)).any():
        return ()
    levels = np.linspace(0.0, 1.0, bins + 1)
    values = present.to_numpy()
    if ranked and not np.isnan(values[-1]):
        edges = np.unique(sorted_quantiles(values, levels))
    else:
        edges = np.unique(np.quantile(values, levels))
    return tuple(float(edge) for edge in edges) if len(edges) >= 3 else ()


def sorted_quantiles(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``np.quantile(values, levels)`` ("linear") of ascending ``values`` without NaN, the same
    bits, read off the sorted values instead of numpy's partition of a copy (10-30 ms a column
    of 800,000): numpy's virtual index (n - 1) * level, its neighbours (the last value at and
    beyond the end) and its ``_lerp``, whose weight from 0.5 on counts back from the upper one."""
    virtual = (len(values) - 1) * levels
    below = np.floor(virtual).astype(np.intp)
    above = below + 1
    below[virtual >= len(values) - 1] = above[virtual >= len(values) - 1] = -1
    below[virtual < 0] = above[virtual < 0] = 0
    low, high, weight = values[below], values[above], virtual - below
    spread = high - low
    result = low + spread * weight
    np.subtract(high, spread * (1 - weight), out=result, where=weight >= 0.5)
    return result


def robust_scale(
    column: pl.Series, minimum: float, maximum: float, median: float
) -> tuple[float, float, float]:
    """(offset, scale, clip) of normalization "robust": the median (given), the interquartile
    range (half the range when the quartiles meet, as for a 0/1 column that is mostly 0) and
    SMOOTH_CLIP."""
    present = column.drop_nulls()
    spread = float(present.quantile(0.75, "linear")) - float(present.quantile(0.25, "linear"))
    if not spread > 0:
        spread = (maximum - minimum) / 2
    return median, spread, SMOOTH_CLIP


def fit_categorical(column: pl.Series, missing: str) -> CategoricalFeature:
    imputed = missing == "impute" and column.null_count() > 0
    if imputed:
        column = column.fill_null(MISSING_CATEGORY)
    counted = column.drop_nulls().value_counts()
    counts = dict(
        zip(
            counted.get_column(column.name).to_list(),
            counted.get_column("count").to_list(),
            strict=True,
        )
    )
    by_count = sorted(counts, key=lambda category: (-counts[category], category))
    other = len(by_count) > MAX_ONE_HOT
    if other:
        kept = {*by_count[: MAX_ONE_HOT - 1], *([MISSING_CATEGORY] if imputed else [])}
        rest = sum(count for category, count in counts.items() if category not in kept)
        counts = {category: counts[category] for category in kept} | {OTHER_CATEGORY: rest}
    categories = tuple(sorted(counts))
    return CategoricalFeature(
        name=column.name,
        categories=categories,
        counts=tuple(int(counts[category]) for category in categories),
        fill_value=MISSING_CATEGORY if imputed else by_count[0] if missing == "impute" else None,
        other=other,
    )


def encode(
    features: Sequence[Feature],
    width: int,
    columns: dict[str, pl.Series],
    keep: pl.Series | None,
    unknown: str,
) -> tuple[torch.Tensor, dict[str, int]]:
    """Impute, check and encode feature inputs into a float32 (N, F) tensor.

    Returns the tensor and, per categorical column, how many cells held a category not seen
    in training (all zeros). ``keep`` (when rows were dropped) maps positions back to the
    caller's table for errors.
    """
    n_rows = next(iter(columns.values())).len()
    sources, unseen = encoder_sources(features, columns, keep)
    counts = unknown_counts(features, columns, unseen, None, keep, unknown)
    return encoded_rows(sources, n_rows, width), counts


def encoder_sources(
    features: Sequence[Feature], columns: dict[str, pl.Series], keep: pl.Series | None
) -> tuple[list[tuple[Feature, np.ndarray]], dict[str, np.ndarray]]:
    """What :func:`encoded_rows` reads: per feature its imputed float64 values (numbers) or
    category indices (-1: not seen in training), and per categorical column without an
    "other" category a boolean (N,) array, True where the cell holds an unseen category.

    Raises:
        DataError: a number is NaN, infinite or beyond float32's range.
    """
    sources: list[tuple[Feature, np.ndarray]] = []
    unseen_cells: dict[str, np.ndarray] = {}
    for feature in features:
        column = columns[feature.name]
        if feature.fill_value is not None:
            column = column.fill_null(feature.fill_value)
        if isinstance(feature, NumericFeature):
            unusable = unusable_numbers(column)
            if unusable.any():
                raise DataError(unusable_message(column, unusable, keep))
            sources.append((feature, column.cast(pl.Float64).to_numpy()))
            continue
        lookup = {category: index for index, category in enumerate(feature.categories)}
        index_type = pl.Int16 if len(lookup) < 2**15 else pl.Int64  # 2 bytes a row where it fits
        indices = column.replace_strict(lookup, default=-1, return_dtype=index_type)
        indices = indices.fill_null(-1).to_numpy(writable=True)
        unseen = (indices < 0) & column.is_not_null().to_numpy()
        if feature.other:
            indices[unseen] = lookup[OTHER_CATEGORY]
        else:
            unseen_cells[feature.name] = unseen
        sources.append((feature, indices))
    return sources, unseen_cells


def unknown_counts(
    features: Sequence[Feature],
    columns: dict[str, pl.Series],
    unseen_cells: dict[str, np.ndarray],
    rows: np.ndarray | None,
    keep: pl.Series | None,
    unknown: str,
) -> dict[str, int]:
    """Per categorical column, the cells of ``rows`` (default: all) with a category not seen in
    training, from :func:`encoder_sources`.

    Raises:
        DataError: under ``unknown="error"``, naming the first such cell.
    """
    counts: dict[str, int] = {}
    for feature in features:
        if feature.name not in unseen_cells:
            continue
        unseen = unseen_cells[feature.name] if rows is None else unseen_cells[feature.name][rows]
        if not unseen.any():
            continue
        if unknown == "error":
            first = int(np.flatnonzero(unseen)[0])
            first = first if rows is None else int(rows[first])
            raise DataError(
                f"row {row_number(source_index(first, keep))}, column "
                f"{clip(repr(feature.name))}: unknown category "
                f"{clip(repr(columns[feature.name][first]))}; the categories seen in training "
                f"are {quoted_names(feature.categories)} (--unknown ignore encodes unknown "
                "categories as all zeros)"
            )
        counts[feature.name] = int(unseen.sum())
    return counts


class GatheredColumns(Mapping[str, pl.Series]):
    """``columns`` at ``rows`` (int64 positions), each column gathered when it is read and
    not kept, so that fitting on a subset of rows holds one gathered column at a time."""

    def __init__(self, columns: Mapping[str, pl.Series], rows: pl.Series) -> None:
        self._columns = columns
        self._rows = rows

    def __getitem__(self, name: str) -> pl.Series:
        return self._columns[name].gather(self._rows)

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


def fit_features(
    inputs: Mapping[str, pl.Series],
    origin: dict[str, tuple[str, str | None]],
    labels: pl.Series,
    missing: str,
    normalization: str,
    scales: Mapping[str, float],
    bins: int = 0,
) -> tuple[tuple[Feature, ...], pl.Series | None]:
    """The features fitted on the rows the missing policy keeps, and those rows (None: all);
    numbers get ``bins`` quantile bins (0: none). Under "impute" a number column with missing
    cells gets its 0/1 indicator after its last input. Each input is read once here (and once
    by the missing policy), a column at a time."""
    kept = complete_rows(inputs, labels.is_not_null().alias(labels.name), missing)
    if kept is not None and not kept.any():
        raise DataError(
            "no rows are left after dropping the rows with missing values (--missing drop); "
            "--missing impute keeps them"
        )
    names = list(inputs)
    features: list[Feature] = []
    with_missing = set()
    for position, name in enumerate(names):
        column = inputs[name] if kept is None else inputs[name].filter(kept)
        source = origin[name][0]
        if not column.dtype.is_numeric():
            features.append(fit_categorical(column, missing))
            continue
        bad_rows = unusable_numbers(column)
        if bad_rows.any():
            raise DataError(unusable_message(column, bad_rows, kept))
        if missing == "impute" and column.null_count():
            with_missing.add(source)
        where = stored_source(origin[name])
        features.append(fit_numeric(column, normalization, scales, missing, where, bins))
        is_last = position + 1 == len(names) or origin[names[position + 1]][0] != source
        if source in with_missing and is_last:
            indicator = column.is_null().cast(pl.Float64).alias(f"{source}.{INDICATOR_PART}")
            part = (source, INDICATOR_PART)
            features.append(fit_numeric(indicator, normalization, scales, missing, part, 0))
    return tuple(features), kept
