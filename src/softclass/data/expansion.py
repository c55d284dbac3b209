"""Network inputs made from compact features where the rows are used: the piecewise-linear bins.

With ``bins`` > 0 a number becomes its scaled value and one output per quantile bin
(:mod:`softclass.data.features`): 274 outputs a row instead of 61 for a table of 30 columns,
4.9x the table in float32. The bins are a function of the number alone, so the prepared rows
keep the *compact* features (the outputs of features without bins: scaled numbers, missing
indicators, one-hot) and each binned number's imputed value (float64), and
:class:`InputExpansion` makes the network's inputs from them for the rows in use (a batch, a
block to predict), in the arithmetic of :func:`softclass.data.features.encoded_rows`:
``clip((value - lower) / width, 0, 1)`` in float64, then float32 -- so every input is
bit-identical to the dense matrix.

A binned number's scaled value is made the same way from its binned value (the compact rows do
not hold it): ``(value - offset) / scale`` in float64, under "robust" then smoothly clipped
(``s / sqrt(1 + (s / clip)²)``), then float32 -- :func:`~softclass.data.features.encoded_rows`'
arithmetic, operation by operation, so these inputs too are bit-identical to the dense matrix.

The compiled training loops (``training/mlp_native.c``) apply the same rules to each row they
gather, from the arrays :attr:`InputExpansion.sources`, :attr:`~InputExpansion.lower`,
:attr:`~InputExpansion.width` and :attr:`~InputExpansion.bound`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from softclass.data.features import (
    Feature,
    NumericFeature,
    encode,
    encoded_rows,
    encoder_sources,
    unknown_counts,
)

_EXPAND_BLOCK_VALUES = 1 << 22  # network inputs per block when a whole matrix is expanded


@dataclass(frozen=True, eq=False)
class InputExpansion:
    """How each network input is made from a row's compact features and binned values.

    Attributes:
        sources: int64 (F,): input j is compact column ``sources[j]`` when >= 0 (passed
            through), else made from binned value ``k = -1 - sources[j]``: ``v = (raw[k] -
            lower[j]) / width[j]`` in float64, then as ``bound[j]`` says.
        lower, width: float64 (F,): each bin's lower edge and width, each scaled value's offset
            and scale (0 and 1 for passed inputs).
        bound: float64 (F,): 0 for a bin (``v`` clipped to [0, 1]), inf for a scaled value
            (``v``), else the smooth clip c of a scaled value (``v / sqrt(1 + (v / c)²)``); 0 for
            passed inputs.
        n_compact: compact columns a row has; n_raw: binned values a row has.
    """

    sources: np.ndarray
    lower: np.ndarray
    width: np.ndarray
    bound: np.ndarray
    n_compact: int
    n_raw: int

    @classmethod
    def of(cls, features: Sequence[Feature]) -> InputExpansion | None:
        """The expansion of a recipe's features, or None when no feature has bins."""
        sources: list[int] = []
        lower: list[float] = []
        width: list[float] = []
        bound: list[float] = []
        n_compact = n_raw = 0
        for feature in features:
            edges = _edges(feature)
            if edges is None:
                passed = len(feature.output_names)
                sources.extend(range(n_compact, n_compact + passed))
                lower.extend([0.0] * passed)
                width.extend([1.0] * passed)
                bound.extend([0.0] * passed)
                n_compact += passed
                continue
            # the scaled value, then the bins, all from binned value n_raw
            sources.extend([-1 - n_raw] * len(edges))
            lower.extend([feature.offset, *edges[:-1].tolist()])
            width.extend([feature.scale, *np.diff(edges).tolist()])
            clip = math.inf if feature.clip is None else feature.clip
            bound.extend([clip, *[0.0] * (len(edges) - 1)])
            n_raw += 1
        if n_raw == 0:
            return None
        return cls(
            np.asarray(sources, dtype=np.int64),
            np.asarray(lower, dtype=np.float64),
            np.asarray(width, dtype=np.float64),
            np.asarray(bound, dtype=np.float64),
            n_compact,
            n_raw,
        )

    @property
    def n_inputs(self) -> int:
        """F, the network inputs a row expands to."""
        return len(self.sources)

    def expand(
        self, compact: torch.Tensor, raw: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """The network inputs ``(n, F)`` in ``dtype`` of rows given as compact features
        ``(n, n_compact)`` and binned values float64 ``(n, n_raw)`` (on one device).

        Bins and scaled values are computed in float64 and rounded to float32 (as the dense
        encoder), then to ``dtype``; passed columns are copied (float32 to ``dtype``, no float64
        arithmetic).
        """
        passed, derived, raw_columns, lower, width, counts, clips = self._tensors(compact.device)
        inputs = torch.empty((compact.shape[0], self.n_inputs), dtype=dtype, device=compact.device)
        inputs.index_copy_(1, passed, compact[:, : self.n_compact].to(torch.float32).to(dtype))
        # Made input-major, (inputs, n): gathering whole rows of the transposed values is several
        # times faster than gathering columns. The bins come first, clamped to [0, 1] keeping
        # -0.0 (as numpy's clip in the dense encoder); then the smoothly clipped scaled values,
        # each operation as the dense encoder's; then the scaled values left as they are.
        values = raw.t().index_select(0, raw_columns).sub_(lower).div_(width)
        n_bins, n_clipped = counts
        values[:n_bins].clamp_(0.0, 1.0)
        clipped = values[n_bins : n_bins + n_clipped]
        if n_clipped:
            ratio = clipped / clips
            clipped.div_(ratio.mul_(ratio).add_(1.0).sqrt_())
        inputs.index_copy_(1, derived, values.to(torch.float32).t().to(dtype))
        return inputs

    def _tensors(self, device: torch.device) -> tuple:
        """(positions of the passed inputs, positions of the derived inputs -- bins, smoothly
        clipped scaled values, other scaled values --, the binned value of each, its lower edge
        (offset) and width (scale) as (D, 1) float64 columns, (bins, clipped scaled values), the
        clips as a float64 column), on ``device``, made once."""
        cached = self.__dict__.get("_cache")
        if cached is None or cached[0].device != device:
            sources = torch.from_numpy(self.sources)
            bound = torch.from_numpy(self.bound)
            kinds = [
                (sources < 0) & (bound == 0),
                (sources < 0) & (bound > 0) & (bound < math.inf),
                (sources < 0) & (bound == math.inf),
            ]
            derived = torch.cat([torch.nonzero(kind).flatten() for kind in kinds])
            counts = (int(kinds[0].sum()), int(kinds[1].sum()))
            tensors = (
                torch.nonzero(sources >= 0).flatten(),
                derived,
                -1 - sources[derived],
                torch.from_numpy(self.lower)[derived][:, None],
                torch.from_numpy(self.width)[derived][:, None],
                bound[derived][counts[0] : counts[0] + counts[1], None],
            )
            tensors = tuple(tensor.to(device) for tensor in tensors)
            cached = (*tensors[:5], counts, tensors[5])
            object.__setattr__(self, "_cache", cached)
        return cached


def encode_compact(
    features: Sequence[Feature],
    columns: dict[str, pl.Series],
    keep: pl.Series | None,
    unknown: str,
) -> tuple[torch.Tensor | FeatureRows, dict[str, int]]:
    """:func:`softclass.data.features.encode` with the bins left to the expansion:
    :class:`FeatureRows` when a feature has bins, else the float32 (N, F) tensor; and the
    unknown categories per column. Raises as ``encode``."""
    expansion = InputExpansion.of(features)
    if expansion is None:
        return encode(features, sum(len(f.output_names) for f in features), columns, keep, unknown)
    n_rows = next(iter(columns.values())).len()
    sources, unseen = encoder_sources(features, columns, keep)
    counts = unknown_counts(features, columns, unseen, None, keep, unknown)
    compact = [(feature, values) for feature, values in sources if _edges(feature) is None]
    matrix = encoded_rows(compact, n_rows, expansion.n_compact)
    raw = np.empty((n_rows, expansion.n_raw), dtype=np.float64)
    binned = [values for feature, values in sources if _edges(feature) is not None]
    for column, values in enumerate(binned):
        raw[:, column] = values
    return FeatureRows(matrix, torch.from_numpy(raw), expansion), counts


def compact_features(features: Sequence[Feature]) -> tuple[Feature, ...]:
    """The features without bins: what the compact columns encode (a binned number's scaled
    value and bins are made from its binned value)."""
    return tuple(feature for feature in features if _edges(feature) is None)


def binned_features(features: Sequence[Feature]) -> tuple[NumericFeature, ...]:
    """The features with bins, in the order of the binned values."""
    return tuple(feature for feature in features if _edges(feature) is not None)


def _edges(feature: Feature) -> np.ndarray | None:
    edges = getattr(feature, "edges", ())
    return np.asarray(edges, dtype=np.float64) if len(edges) >= 2 else None


class FeatureRows:
    """Feature rows kept compact: what a network reads, expanded where the rows are used.

    ``compact``: float32 (N, n_compact); ``raw``: float64 (N, n_raw) binned values;
    ``expansion``: the rule; ``dtype``: of the expanded rows (float32 unless :meth:`to` says).
    Behaves as the (N, F) matrix for ``shape``, ``len``, ``dim`` and row indexing
    (``rows[index]`` returns the expanded rows); :meth:`dense` builds the matrix.
    """

    def __init__(
        self,
        compact: torch.Tensor,
        raw: torch.Tensor,
        expansion: InputExpansion,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.compact = compact
        self.raw = raw
        self.expansion = expansion
        self.dtype = dtype

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.compact.shape[0], self.expansion.n_inputs))

    @property
    def device(self) -> torch.device:
        return self.compact.device

    @property
    def nbytes(self) -> int:
        """Bytes held (compact and binned values), against ``4 * N * F`` for the matrix."""
        return self.compact.nbytes + self.raw.nbytes

    def dim(self) -> int:
        return 2

    def __len__(self) -> int:
        return int(self.compact.shape[0])

    def __getitem__(self, index: torch.Tensor | slice | np.ndarray) -> torch.Tensor:
        """The expanded rows at ``index`` (a slice or 1-D positions / mask), in ``dtype``."""
        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        return self.expansion.expand(self.compact[index], self.raw[index], self.dtype)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> FeatureRows:
        """The same rows on ``device``, expanding to ``dtype`` (each default: unchanged)."""
        device = self.device if device is None else device
        return FeatureRows(
            self.compact.to(device), self.raw.to(device), self.expansion, dtype or self.dtype
        )

    def rows(self, index: torch.Tensor) -> FeatureRows:
        """The rows at ``index``, still compact."""
        return FeatureRows(self.compact[index], self.raw[index], self.expansion, self.dtype)

    def dense(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The whole (N, F) matrix in ``dtype`` (default: :attr:`dtype`), expanded a block of
        rows at a time."""
        dtype = dtype or self.dtype
        matrix = torch.empty((len(self), self.expansion.n_inputs), dtype=dtype, device=self.device)
        for rows in row_blocks(self):
            matrix[rows] = self.expansion.expand(self.compact[rows], self.raw[rows], dtype)
        return matrix


def as_dense(features: torch.Tensor | FeatureRows) -> torch.Tensor:
    """The (N, F) matrix of ``features``: a tensor as is, :class:`FeatureRows` expanded."""
    return features.dense() if isinstance(features, FeatureRows) else features


def take_rows(
    features: torch.Tensor | FeatureRows, index: torch.Tensor
) -> torch.Tensor | FeatureRows:
    """The rows of ``features`` at ``index``, :class:`FeatureRows` staying compact."""
    return features.rows(index) if isinstance(features, FeatureRows) else features[index]


def row_blocks(features: torch.Tensor | FeatureRows) -> list[slice]:
    """Slices of ``features``' rows to use a block at a time: one slice of every row for a
    tensor, blocks of about 4M network inputs (16 MiB in float32) for :class:`FeatureRows`."""
    n_rows = features.shape[0]
    if not isinstance(features, FeatureRows):
        return [slice(0, n_rows)]
    block = max(1, _EXPAND_BLOCK_VALUES // max(features.expansion.n_inputs, 1))
    return [slice(start, min(start + block, n_rows)) for start in range(0, max(n_rows, 1), block)]


def in_blocks(
    function: Callable[[torch.Tensor], torch.Tensor], features: torch.Tensor | FeatureRows
) -> torch.Tensor:
    """``function(features)`` for a tensor; for :class:`FeatureRows`, ``function`` of each block
    of expanded rows (:func:`row_blocks`), the results concatenated along dim 0 -- e.g. a
    model's logits without the whole (N, F) matrix."""
    if not isinstance(features, FeatureRows):
        return function(features)
    blocks = [function(features[rows]) for rows in row_blocks(features)]
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks)


def fingerprint_tensors(
    *parts: torch.Tensor | FeatureRows | None,
) -> tuple[torch.Tensor | None, ...]:
    """The tensors that identify ``parts`` for a checkpoint's data fingerprint: a tensor (or
    None) as is, :class:`FeatureRows` as its compact features and binned values."""
    flat: list[torch.Tensor | None] = []
    for part in parts:
        flat.extend((part.compact, part.raw) if isinstance(part, FeatureRows) else (part,))
    return tuple(flat)
