"""The ``predict`` job behind the command line, as a library function.

:func:`predict_table` applies a saved model (its recipe unchanged) to the raw rows of a table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from softclass.data.checks import check_choice
from softclass.data.messages import HEADER_ROWS, ROW_NUMBERING, row_number
from softclass.data.prepared import PreparedTable, skipped_rows_warning
from softclass.data.recipe import ERROR_POLICIES
from softclass.diagnostics.check import Finding, check_pairing
from softclass.errors import DataError
from softclass.evaluation import metrics
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
        table: one row per input row, in input order: ``row`` (the row number as messages count
            it: header = row 1, first data row = 2), the ``--id`` columns, one probability column
            per class, ``predicted`` (the class name) and, when some row has no prediction (its
            probabilities and ``predicted`` are then empty), ``reason`` (why; empty for the
            rows that have one). A
            probability column is named by its class, prefixed with ``proba_`` (as often as
            needed) when that name is ``row``, ``predicted``, ``reason`` or another column's:
            see :func:`softclass.jobs.output.probability_columns`; an id column whose name is
            taken is prefixed with ``id_``. Class names are kept as they are;
            :func:`softclass.jobs.output.spreadsheet_safe` neutralises them for CSV files.
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
        batch_rows: rows per forward pass (memory stays bounded on large tables).
        progress: called after each batch with rows done and total.
        source: where the table came from (a file name), for messages.

    Raises:
        DataError: a feature column is absent, ``accuracy`` without the target column, or
            (under ``on_error="error"``) a row cannot be predicted.
    """
    recipe = saved.recipe
    check_choice("on_error", on_error, ERROR_POLICIES)
    if accuracy and recipe.target not in table.columns:
        raise DataError(
            f"--accuracy needs the target column {recipe.target!r}, which the table lacks"
        )
    prepared = recipe.prepare(
        table,
        on_error="skip",
        unknown=unknown,
        use_target=False,
        source=source,
        allow_no_rows=True,
    )
    skipped = _unpredicted_rows(prepared, table.height, recipe.missing)
    if skipped and on_error == "error":
        raise DataError(unpredicted_message(skipped, table.height, source))
    total = prepared.features.shape[0]
    parts = []
    for start in range(0, total, batch_rows):
        batch = slice(start, start + batch_rows)
        parts.append(
            saved.predict_proba(prepared.features[batch], prepared.rows[batch] + HEADER_ROWS + 1)
        )
        if progress is not None:
            progress(min(start + batch_rows, total), total)
    probabilities = torch.cat(parts) if parts else torch.empty(0, saved.model_config.n_classes)
    warnings = [
        warning
        for warning in prepared.warnings
        if warning != skipped_rows_warning(prepared.skipped)
    ]
    if skipped:
        warnings.append(unpredicted_message(skipped, table.height, source))
    measured, n_unknown = None, 0
    if accuracy:
        labels = recipe.label_indices(table)[prepared.rows]
        known = labels >= 0
        n_unknown = int((~known).sum())
        if n_unknown:
            warnings.append(
                f"{n_unknown} row(s) have no label or a class the model never saw "
                f"(column {recipe.target!r}); the accuracy counts the other rows"
            )
        if known.any():
            measured = float(metrics.accuracy(probabilities[known], labels[known]))
    output = _prediction_rows(saved, table, prepared.rows.numpy(), probabilities, skipped)
    return Prediction(output, measured, tuple(warnings), skipped, n_unknown)


def _unpredicted_rows(
    prepared: PreparedTable, n_rows: int, missing: str
) -> tuple[tuple[int, str], ...]:
    """``(0-based row, reason)`` of every input row ``prepared`` left out, in row order."""
    reasons = dict(prepared.skipped)
    kept = set(prepared.rows.tolist())
    for index in range(n_rows):
        if index not in kept and index not in reasons:
            reasons[index] = f"a missing value (the model was trained with --missing {missing})"
    return tuple(sorted(reasons.items()))


def unpredicted_message(skipped: Sequence[tuple[int, str]], n_rows: int, source: str) -> str:
    """One line: how many rows of ``source`` have no prediction, and the first reasons."""
    shown = "; ".join(f"row {row_number(index)} ({reason})" for index, reason in skipped[:3])
    more = f" … and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return (
        f"{len(skipped)} of {n_rows} row(s) of {source} have no prediction: {shown}{more} "
        f"({ROW_NUMBERING}); their '{PREDICTED_COLUMN}' is empty and '{REASON_COLUMN}' says why"
    )


def _prediction_rows(
    saved: SavedModel,
    table: pl.DataFrame,
    predicted_rows: np.ndarray,
    probabilities: torch.Tensor,
    skipped: Sequence[tuple[int, str]],
) -> pl.DataFrame:
    """The output table: every input row, with empty probabilities and class where skipped."""
    recipe = saved.recipe
    n_rows = table.height
    columns: dict[str, object] = {ROW_COLUMN: np.arange(n_rows) + HEADER_ROWS + 1}
    probability_names = probability_columns(saved.classes)
    taken = {*probability_names, ROW_COLUMN, PREDICTED_COLUMN, REASON_COLUMN}
    for name in recipe.id_columns:
        if name in table.columns:
            column = name
            while column in taken:
                column = f"id_{column}"
            taken.add(column)
            columns[column] = table.get_column(name)
    everything = np.full((n_rows, len(probability_names)), np.nan)
    everything[predicted_rows] = probabilities.double().numpy()
    for index, column in enumerate(probability_names):
        columns[column] = pl.Series(column, everything[:, index]).fill_nan(None)
    names: list[str | None] = [None] * n_rows
    decoded = recipe.decode(probabilities.argmax(dim=1))
    for row, name in zip(predicted_rows.tolist(), decoded, strict=True):
        names[row] = name
    columns[PREDICTED_COLUMN] = pl.Series(PREDICTED_COLUMN, names, dtype=pl.String)
    if skipped:
        reasons: list[str | None] = [None] * n_rows
        for row, reason in skipped:
            reasons[row] = reason
        columns[REASON_COLUMN] = pl.Series(REASON_COLUMN, reasons, dtype=pl.String)
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
