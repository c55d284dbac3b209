"""The ``train`` and ``predict`` jobs behind the command line, as library functions.

:func:`train_to_directory` trains one design on prepared data (through
:func:`softclass.training.engine.train_model`: the fastest backend that supports the options),
checkpointing into the model directory so that an interrupted run can be resumed, and saves the
model there.
:func:`predict_table` applies a saved model (its recipe unchanged) to the raw rows of a table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from softclass.data.checks import check_choice
from softclass.data.messages import HEADER_ROWS, ROW_NUMBERING, row_number
from softclass.data.prepare import PreparedData
from softclass.data.prepared import PreparedTable, skipped_rows_warning
from softclass.data.recipe import ERROR_POLICIES
from softclass.diagnostics.check import Finding, check_pairing
from softclass.errors import ConfigError, DataError, ModelFileError
from softclass.evaluation import metrics
from softclass.evaluation.measure import measure
from softclass.evaluation.report import RunContext
from softclass.io import claim_output_directory, temporary_path
from softclass.jobs.comparison import ComparisonResult
from softclass.jobs.destination import check_output_directory, replace_run, unit_fingerprint
from softclass.jobs.output import (
    PREDICTED_COLUMN,
    REASON_COLUMN,
    ROW_COLUMN,
    probability_columns,
)
from softclass.jobs.report import write_report
from softclass.jobs.store import METADATA_FILE, SavedModel, check_finite_recipe, save_model
from softclass.mlp.designs import Design
from softclass.mlp.model import MLPConfig
from softclass.training.config import TrainConfig
from softclass.training.distributed import DistContext, barrier
from softclass.training.engine import checkpoint_progress, train_model
from softclass.training.results import ProgressCallback, TrainResult

CHECKPOINT_FILE = "checkpoint.pt"


def train_to_directory(
    data: PreparedData,
    design: Design,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    hidden: Sequence[int] = (7,),
    activation: str = "tanh",
    resume: bool = False,
    progress: ProgressCallback | None = None,
    distributed: DistContext | None = None,
    context: RunContext | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train ``design`` and save it in ``out_dir`` (model.safetensors, model.json, report.html).

    A checkpoint (``out_dir/checkpoint.pt``) is written every ``config.checkpoint_every`` epochs
    and kept; ``resume=True`` continues from it with the same final weights as an uninterrupted
    run. Under torchrun (``distributed``), every rank trains and rank 0 alone writes the
    checkpoint and the model; the other ranks wait for it. ``context`` (the table's name, the
    command) goes into report.html, which measures the model on the validation rows (on the
    training rows, and says so, when there are none).

    Rank 0 holds a lock on ``out_dir`` for the whole run (a second run on the same directory is
    refused at once) and checks that it can write there before training. The run's files (model,
    report, figures, checkpoint) replace the earlier ones as one unit at the end
    (:func:`softclass.jobs.destination.replace_run`): a run that fails, diverges or is killed
    leaves the earlier run whole. With ``overwrite`` over an earlier run, this run's checkpoints
    are kept under a temporary name until then (such a run cannot be resumed once killed).

    Raises:
        ConfigError: ``out_dir`` holds a model or checkpoint and neither ``resume`` nor
            ``overwrite`` is set, ``out_dir`` is not a train directory
            (:func:`softclass.jobs.destination.check_output_directory`), the data has no recipe,
            or the recipe's statistics are not finite.
        ModelFileError: resuming from a missing, unsafe or mismatched checkpoint.
        OutputBusyError: another run is writing ``out_dir``.
        OutputError: ``out_dir`` is a file, is not writable, or the device is full.
        TrainingDiverged: the loss or the weights became NaN or infinite (no model is saved).
    """
    if data.recipe is None:
        raise ConfigError("train_to_directory needs data prepared from a table (with a recipe)")
    check_finite_recipe(data.recipe)
    distributed = DistContext() if distributed is None else distributed
    out_dir = check_output_directory(out_dir, "train", overwrite=overwrite, resume=resume)
    claim = claim_output_directory(out_dir) if distributed.is_main else contextlib.nullcontext()
    with claim:
        return _train_into(
            data,
            design,
            out_dir,
            config,
            hidden,
            activation,
            resume,
            progress,
            distributed,
            context,
        )


def _train_into(
    data: PreparedData,
    design: Design,
    out_dir: Path,
    config: TrainConfig | None,
    hidden: Sequence[int],
    activation: str,
    resume: bool,
    progress: ProgressCallback | None,
    distributed: DistContext,
    context: RunContext | None,
) -> TrainResult:
    # Replacing an earlier run: its checkpoint stays until this run's unit is swapped in.
    replacing = not resume and unit_fingerprint(out_dir) is not None
    checkpoint = out_dir / CHECKPOINT_FILE
    if replacing:
        checkpoint = temporary_path(checkpoint)
    barrier(distributed)  # every rank has looked before rank 0 writes a checkpoint
    config = TrainConfig() if config is None else config
    model_config = MLPConfig(data.n_features, data.n_classes, tuple(hidden), activation)
    try:
        result = train_model(
            design,
            model_config,
            config,
            data.train_features,
            data.train_targets,
            data.validation_features,
            data.validation_targets,
            checkpoint_path=checkpoint,
            resume=resume,
            progress=progress,
            distributed=distributed,
        )
        if distributed.is_main:
            with replace_run(out_dir, keep=() if replacing else (CHECKPOINT_FILE,)) as staging:
                save_model(
                    staging, result.model, design, data.recipe, config, result.history.summary()
                )
                _write_train_report(result, data, out_dir, staging, context)
                if replacing and checkpoint.is_file():
                    checkpoint.replace(staging / CHECKPOINT_FILE)
    finally:
        if replacing:
            checkpoint.unlink(missing_ok=True)
    barrier(distributed)
    return result


def _write_train_report(
    result: TrainResult,
    data: PreparedData,
    out_dir: Path,
    staging: Path,
    context: RunContext | None,
) -> None:
    """report.html of one trained design: a one-design comparison measured like ``compare``."""
    if data.validation_features is None:
        n_train = int(data.train_features.shape[0])
        data = replace(
            data,
            validation_features=data.train_features,
            validation_targets=data.train_targets,
            warnings=(
                *data.warnings,
                f"no rows were held out (--validation 0): the {n_train} rows this page calls "
                f"validation or held-out rows are the {n_train} training rows themselves, so "
                "every number measured on them is optimistic",
            ),
        )
    comparison = ComparisonResult(
        designs=(result.design.name,),
        seeds=(result.config.seed,),
        runs=(measure(result, data),),
        agreements=(),
        class_names=data.class_names,
        model_config=result.model_config,
        config=result.config,
        n_train=int(data.train_features.shape[0]),
        n_validation=int(data.validation_features.shape[0]),
        out_dir=out_dir,
    )
    write_report(comparison, data, staging, context, kind="train")


def describe_kept(out_dir: str | Path, before: int | None = None) -> str:
    """One line on what a stopped ``train`` left in ``out_dir``, read from the files.

    ``before`` is :func:`softclass.jobs.destination.unit_fingerprint` of ``out_dir`` taken before
    the run (None: no run was there): a run's files are swapped in as a new directory, so a
    changed fingerprint means this run's model was saved before the stop. For the command
    line's message after an interrupt or a divergence; never raises.
    """
    out_dir = Path(out_dir)
    if (out_dir / METADATA_FILE).is_file() and unit_fingerprint(out_dir) != before:
        return f"this run's model, checkpoint and report were saved in {out_dir} before it stopped"
    checkpoint = out_dir / CHECKPOINT_FILE
    parts = []
    if checkpoint.is_file():
        parts.append(_describe_checkpoint(checkpoint))
    if (out_dir / METADATA_FILE).is_file():
        parts.append(f"the model saved in {out_dir} before this run is untouched")
    if not parts:
        return "nothing was kept (no epoch finished, no checkpoint written)"
    return "; ".join(parts)


def _describe_checkpoint(checkpoint: Path) -> str:
    try:
        epoch, epochs = checkpoint_progress(checkpoint)
    except (
        ModelFileError,
        OSError,
        RuntimeError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ):
        return f"kept {checkpoint} (unreadable: {checkpoint.name} may be damaged)"
    return (
        f"kept the checkpoint of epoch {epoch} of {epochs or '?'} in {checkpoint} "
        "(train again with --resume to continue it)"
    )


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
