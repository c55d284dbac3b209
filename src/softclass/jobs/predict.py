"""The ``predict`` job behind the command line, as library functions.

:func:`predict_table` applies a saved model (its recipe unchanged) to the raw rows of a table
in memory; :class:`PredictionStream` does the same to a sequence of chunks of a table (read by
:class:`softclass.data.chunks.TableChunks`), one output chunk per input chunk, so that memory
stays flat in the number of rows. Both run :func:`_predict_chunk` on each piece: the same rows,
probabilities and reasons whatever the chunk size.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch

from softclass.data.checks import check_choice
from softclass.data.expansion import row_blocks
from softclass.data.messages import HEADER_ROWS, ROW_NUMBERING, row_list, row_number
from softclass.data.missing import dropped_rows_warning
from softclass.data.prepared import skipped_rows_warning, unknown_categories_warning
from softclass.data.recipe import ERROR_POLICIES
from softclass.diagnostics.check import Finding, check_pairing
from softclass.errors import DataError
from softclass.jobs.output import (
    PREDICTED_COLUMN,
    REASON_COLUMN,
    ROW_COLUMN,
    probability_columns,
)
from softclass.jobs.store import SavedModel


@dataclass(frozen=True)
class Prediction:
    """What :func:`predict_table` returns.

    Attributes:
        table: one row per input row, in input order: ``row`` (header = row 1, first data
            row = 2), the ``--id`` columns, one probability column per class
            (:func:`softclass.jobs.output.probability_columns` names them), ``predicted`` (the
            class name) and, when some row has no prediction (its probabilities and
            ``predicted`` then empty), ``reason`` (empty for the rows that have one).
        accuracy: share of right predictions among the predicted rows whose label is a known
            class, when accuracy was asked for, else None.
        warnings: what the user should hear (ignored columns, rows without a prediction,
            unknown categories, unknown labels).
        skipped: ``(0-based row, reason)`` of each row without a prediction.
        unknown_labels: predicted rows whose label is missing or a class the model never saw
            (not counted in the accuracy).
    """

    table: pl.DataFrame
    accuracy: float | None
    warnings: tuple[str, ...]
    skipped: tuple[tuple[int, str], ...] = ()
    unknown_labels: int = 0


PredictProgress = Callable[[int, int], None]
"""Called as ``progress(rows_done, rows_total)`` after each batch of :func:`predict_table`."""


_DROPPED_WARNING = re.compile(r"dropped \d+ row\(s\) with missing values: ")
_KEPT_ROWS = 10  # rows named in a warning: the messages show the first few and a count


@dataclass
class _Tally:
    """What a prediction has seen so far, in memory independent of the number of rows: counts,
    and the first rows of each kind (all of them with ``keep_all``)."""

    keep_all: bool = False
    rows: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    n_skipped: int = 0
    dropped: list[int] = field(default_factory=list)
    n_dropped: int = 0
    unknown_categories: Counter[str] = field(default_factory=Counter)
    notes: dict[str, None] = field(default_factory=dict)
    correct: int = 0
    counted: int = 0
    unknown_labels: int = 0

    def add_skipped(self, rows: Sequence[tuple[int, str]]) -> None:
        self.n_skipped += len(rows)
        room = len(rows) if self.keep_all else max(0, _KEPT_ROWS - len(self.skipped))
        self.skipped.extend(rows[:room])

    def add_dropped(self, rows: Sequence[int]) -> None:
        self.n_dropped += len(rows)
        self.dropped.extend(rows[: max(0, _KEPT_ROWS + 1 - len(self.dropped))])

    def warnings(self, target: str, source: str) -> list[str]:
        """The warnings of the whole table, in the order a whole-table prepare gives them."""
        warnings = list(self.notes)
        if self.n_dropped:
            if self.n_dropped == len(self.dropped):
                warnings.append(dropped_rows_warning(pl.Series(self.dropped)))
            else:
                shown = row_list(self.dropped[:_KEPT_ROWS])
                warnings.append(
                    f"dropped {self.n_dropped} row(s) with missing values: {shown} … and "
                    f"{self.n_dropped - _KEPT_ROWS} more ({ROW_NUMBERING})"
                )
        if self.unknown_categories:
            warnings.append(unknown_categories_warning(dict(self.unknown_categories)))
        if self.n_skipped:
            warnings.append(unpredicted_message(self.skipped, self.rows, source, self.n_skipped))
        if self.unknown_labels:
            warnings.append(
                f"{self.unknown_labels} row(s) have no label or a class the model never saw "
                f"(column {target!r}); the accuracy counts the other rows"
            )
        return warnings


@torch.no_grad()
def predict_table(
    saved: SavedModel,
    table: pl.DataFrame,
    *,
    on_error: str = "error",
    unknown: str = "ignore",
    accuracy: bool = False,
    batch_rows: int = 65_536,
    progress: PredictProgress | None = None,
    source: str = "the table",
) -> Prediction:
    """Probabilities and predicted class names for the raw rows of ``table``: one output row
    per input row, always.

    Args:
        saved: the model (its recipe reads the raw cells as in training).
        table: raw rows (``read_table(..., raw=True)``) or a typed table.
        on_error: a row that cannot be predicted (a cell that cannot be read or used, a missing
            value the model's ``--missing`` policy does not fill): "error" raises naming them,
            "skip" returns it with an empty prediction and its reason (``--on-error``).
        unknown: categories not seen in training: "ignore" (all zeros) or "error"
            (``--unknown``, under "error" such a row has no prediction).
        accuracy: measure accuracy on the target column (``--accuracy``); otherwise the target
            column, when present, is ignored. Missing or unknown labels are counted, not fatal.
        batch_rows: rows prepared and predicted at a time (memory stays bounded).
        progress: called after each batch with rows done and total.
        source: where the table came from (a file name), for messages.

    Raises:
        DataError: a feature column is absent, ``accuracy`` without the target column, or
            (under ``on_error="error"``) a row cannot be predicted.
    """
    recipe = saved.recipe
    check_choice("on_error", on_error, ERROR_POLICIES)
    _check_accuracy_column(saved, table.columns, accuracy)
    tally = _Tally(keep_all=True)
    parts = []
    for start in range(0, max(table.height, 1), batch_rows):
        chunk = table.slice(start, batch_rows)
        parts.append(_predict_chunk(saved, chunk, start, tally, unknown, accuracy, source))
        if progress is not None:
            progress(min(start + batch_rows, table.height), table.height)
    output = pl.concat(parts) if len(parts) > 1 else parts[0]
    if not tally.n_skipped:
        output = output.drop(REASON_COLUMN)
    skipped = tuple(tally.skipped)
    if skipped and on_error == "error":
        raise DataError(unpredicted_message(skipped, table.height, source))
    measured = tally.correct / tally.counted if accuracy and tally.counted else None
    warnings = tally.warnings(recipe.target, source)
    return Prediction(output, measured, tuple(warnings), skipped, tally.unknown_labels)


class PredictionStream:
    """Predictions for a table given as a sequence of chunks, one output chunk per input chunk.

    Iterating yields, for each input chunk, the output rows of :attr:`Prediction.table` for it
    (row numbers counted over the whole table). When the table is more than one chunk, the
    ``reason`` column is always there (empty for predicted rows): the columns are fixed before
    a row without a prediction can be known. A table of one chunk gets it only when some row has
    no prediction, as :func:`predict_table`. After the iteration, :attr:`rows`,
    :attr:`accuracy`, :attr:`warnings`, :attr:`n_skipped` and :attr:`unknown_labels` describe
    the whole table. Memory: two input chunks and one output chunk at a time.

    Args:
        saved, unknown, accuracy, source: as :func:`predict_table`.
        chunks: DataFrames of raw rows, in table order, all with the same columns.

    Raises (while iterating):
        DataError: a feature column is absent, ``accuracy`` without the target column.
        ModelFileError: a row gets NaN or infinite probabilities.
    """

    def __init__(
        self,
        saved: SavedModel,
        chunks: Iterable[pl.DataFrame],
        *,
        unknown: str = "ignore",
        accuracy: bool = False,
        source: str = "the table",
    ) -> None:
        self._saved = saved
        self._chunks = chunks
        self._unknown = unknown
        self._accuracy = accuracy
        self._source = source
        self._tally = _Tally()
        self.streamed: bool | None = None  # more than one chunk; known once iteration starts

    def __iter__(self) -> Iterator[pl.DataFrame]:
        chunks = iter(self._chunks)
        current = next(chunks, None)
        if current is None:
            return
        _check_accuracy_column(self._saved, current.columns, self._accuracy)
        upcoming = next(chunks, None)
        self.streamed = upcoming is not None
        tally = self._tally
        with torch.no_grad():
            while current is not None:
                output = _predict_chunk(
                    self._saved,
                    current,
                    tally.rows,
                    tally,
                    self._unknown,
                    self._accuracy,
                    self._source,
                )
                if not self.streamed and not tally.n_skipped:
                    output = output.drop(REASON_COLUMN)
                yield output
                current, upcoming = upcoming, (None if upcoming is None else next(chunks, None))

    @property
    def rows(self) -> int:
        """Input rows done so far."""
        return self._tally.rows

    @property
    def n_skipped(self) -> int:
        """Rows without a prediction so far."""
        return self._tally.n_skipped

    @property
    def skipped(self) -> tuple[tuple[int, str], ...]:
        """``(0-based row, reason)`` of the first rows without a prediction."""
        return tuple(self._tally.skipped)

    @property
    def unknown_labels(self) -> int:
        return self._tally.unknown_labels

    @property
    def counted(self) -> int:
        """Rows the accuracy counts (predicted, with a known label)."""
        return self._tally.counted

    @property
    def accuracy(self) -> float | None:
        tally = self._tally
        return tally.correct / tally.counted if self._accuracy and tally.counted else None

    @property
    def warnings(self) -> tuple[str, ...]:
        recipe = self._saved.recipe
        return tuple(self._tally.warnings(recipe.target, self._source))

    def unpredicted(self) -> str | None:
        """:func:`unpredicted_message` for the whole table, or None when every row has one."""
        tally = self._tally
        if not tally.n_skipped:
            return None
        return unpredicted_message(tally.skipped, tally.rows, self._source, tally.n_skipped)


def _check_accuracy_column(saved: SavedModel, columns: Sequence[str], accuracy: bool) -> None:
    if accuracy and saved.recipe.target not in columns:
        raise DataError(
            f"--accuracy needs the target column {saved.recipe.target!r}, which the table lacks"
        )


def _predict_chunk(
    saved: SavedModel,
    chunk: pl.DataFrame,
    offset: int,
    tally: _Tally,
    unknown: str,
    accuracy: bool,
    source: str,
) -> pl.DataFrame:
    """The output rows of ``chunk`` (its first row is row ``offset`` of the table, 0-based),
    with a ``reason`` column; what the user should hear is added to ``tally``."""
    recipe = saved.recipe
    prepared = recipe.prepare(
        chunk,
        on_error="skip",
        unknown=unknown,
        use_target=False,
        source=source,
        allow_no_rows=True,
        compact=True,
    )
    reasons = dict(prepared.skipped)
    kept = np.zeros(chunk.height, dtype=bool)
    kept[prepared.rows.numpy()] = True
    dropped = [int(index) for index in np.flatnonzero(~kept) if index not in reasons]
    local = dict(reasons)
    for index in dropped:
        local[index] = f"a missing value (the model was trained with --missing {recipe.missing})"
    unpredicted = sorted(local.items())
    # Warnings that name rows or count cells are the chunk's: the tally words them for the table.
    per_chunk = {
        skipped_rows_warning(prepared.skipped),
        unknown_categories_warning(prepared.unknown_categories),
    }
    for warning in prepared.warnings:
        if warning not in per_chunk and not _DROPPED_WARNING.match(warning):
            tally.notes.setdefault(warning, None)
    tally.add_skipped([(index + offset, reason) for index, reason in unpredicted])
    tally.add_dropped([index + offset for index in dropped])
    tally.unknown_categories.update(prepared.unknown_categories)
    row_numbers = prepared.rows + offset + HEADER_ROWS + 1
    features = prepared.features  # with bins: compact rows, expanded a block at a time
    probabilities = (
        torch.cat(
            [
                saved.predict_proba(features[rows], row_numbers[rows])
                for rows in row_blocks(features)
            ]
        )
        if features.shape[0]
        else torch.empty(0, saved.model_config.n_classes)
    )
    if accuracy:
        labels = recipe.label_indices(chunk)[prepared.rows]
        known = labels >= 0
        tally.unknown_labels += int((~known).sum())
        tally.counted += int(known.sum())
        tally.correct += int((probabilities.argmax(dim=1)[known] == labels[known]).sum())
    tally.rows += chunk.height
    return _prediction_rows(saved, chunk, offset, prepared.rows.numpy(), probabilities, local)


def unpredicted_message(
    skipped: Sequence[tuple[int, str]], n_rows: int, source: str, count: int | None = None
) -> str:
    """One line: how many rows of ``source`` have no prediction, and the first reasons.

    ``skipped`` holds at least the first three; ``count`` is their number (default: all of
    ``skipped``)."""
    count = len(skipped) if count is None else count
    shown = "; ".join(f"row {row_number(index)} ({reason})" for index, reason in skipped[:3])
    more = f" … and {count - 3} more" if count > 3 else ""
    return (
        f"{count} of {n_rows} row(s) of {source} have no prediction: {shown}{more} "
        f"({ROW_NUMBERING}); their '{PREDICTED_COLUMN}' is empty and '{REASON_COLUMN}' says why"
    )


def _prediction_rows(
    saved: SavedModel,
    table: pl.DataFrame,
    offset: int,
    predicted_rows: np.ndarray,
    probabilities: torch.Tensor,
    reasons: dict[int, str],
) -> pl.DataFrame:
    """The output table: every input row, with empty probabilities and class where skipped."""
    recipe = saved.recipe
    n_rows = table.height
    columns: dict[str, object] = {
        ROW_COLUMN: pl.Series(ROW_COLUMN, np.arange(n_rows) + offset + HEADER_ROWS + 1, pl.Int64)
    }
    probability_names = probability_columns(saved.classes)
    taken = {*probability_names, ROW_COLUMN, PREDICTED_COLUMN, REASON_COLUMN}
    for name in recipe.id_columns:
        if name in table.columns:
            column = name
            while column in taken:
                column = f"id_{column}"
            taken.add(column)
            columns[column] = table.get_column(name).alias(column)
    everything = np.full((n_rows, len(probability_names)), np.nan)
    everything[predicted_rows] = probabilities.double().numpy()
    for index, column in enumerate(probability_names):
        columns[column] = pl.Series(column, everything[:, index]).fill_nan(None)
    classes = pl.Series(PREDICTED_COLUMN, saved.classes, dtype=pl.String)
    names = pl.Series(PREDICTED_COLUMN, [None] * n_rows, dtype=pl.String)
    if predicted_rows.size:
        picked = classes.gather(probabilities.argmax(dim=1).numpy())
        names = names.scatter(predicted_rows, picked)
    columns[PREDICTED_COLUMN] = names
    why = pl.Series(REASON_COLUMN, [None] * n_rows, dtype=pl.String)
    if reasons:
        why = why.scatter(list(reasons), list(reasons.values()))
    columns[REASON_COLUMN] = why
    return pl.DataFrame(columns)


def check_saved_model(saved: SavedModel, table: pl.DataFrame, rows: int = 256) -> list[Finding]:
    """Run the pairing checker on a saved model's outputs for the first ``rows`` rows of a table.

    The table needs the model's feature columns and its target column (the checker compares
    outputs with targets, encoded as the model's design encodes them).

    Raises:
        DataError: as :meth:`softclass.data.Recipe.prepare`, or when the target column is absent.
    """
    prepared = saved.recipe.prepare(table.head(rows))
    if prepared.targets is None:
        raise DataError(
            f"checking a model needs the target column {saved.recipe.target!r} in the table"
        )
    with torch.no_grad():
        outputs = saved.design.output(saved.model(prepared.features))
    encoded = saved.design.encode_targets(prepared.targets, saved.model_config.n_classes)
    return check_pairing(outputs, encoded, saved.design.loss_name)
