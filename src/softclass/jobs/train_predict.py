"""The ``train`` and ``predict`` jobs behind the command line, as library functions.

:func:`train_to_directory` trains one design on prepared data (through
:func:`softclass.training.engine.train_model`: the fastest backend that supports the options),
checkpointing into the model directory so that an interrupted run can be resumed, and saves the
model there.
:func:`softclass.jobs.predict.predict_table` (its own module) applies a saved model to the raw
rows of a table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from softclass.data.prepare import PreparedData
from softclass.errors import ConfigError, ModelFileError
from softclass.evaluation.measure import measure
from softclass.evaluation.report import RunContext
from softclass.io import claim_output_directory, temporary_path
from softclass.jobs.comparison import ComparisonResult
from softclass.jobs.destination import check_output_directory, replace_run, unit_fingerprint
from softclass.jobs.report import write_report
from softclass.jobs.store import METADATA_FILE, check_finite_recipe, save_model
from softclass.jobs.stream_train import StreamedData, default_memory
from softclass.mlp.designs import Design
from softclass.mlp.model import MLPConfig
from softclass.training.config import TrainConfig
from softclass.training.distributed import DistContext, barrier
from softclass.training.engine import checkpoint_progress, choose_backend, train_model
from softclass.training.results import ProgressCallback, TrainResult
from softclass.training.streamed import StreamedTrainer

CHECKPOINT_FILE = "checkpoint.pt"


def train_to_directory(
    data: PreparedData | StreamedData,
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
    training rows, and says so, when there are none). ``data`` is a table prepared in memory or
    one streamed from disk (:class:`softclass.jobs.stream_train.StreamedData`; the report then
    measures the model on at most 100,000 of rank 0's validation rows).

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
    data: PreparedData | StreamedData,
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
    config = one_network_where_needed(
        TrainConfig() if config is None else config, data, distributed
    )
    model_config = MLPConfig(data.n_features, data.n_classes, tuple(hidden), activation)
    if isinstance(data, PreparedData):
        held_out = data.validation_targets
        report_rows = data.train_targets if held_out is None else held_out  # what it scores
        check_report_fits(data.n_classes, int(report_rows.numel()), default_memory())
    try:
        result = _fit(data, design, model_config, config, checkpoint, resume, progress, distributed)
        if distributed.is_main:
            with replace_run(out_dir, keep=() if replacing else (CHECKPOINT_FILE,)) as staging:
                save_model(
                    staging, result.model, design, data.recipe, config, result.history.summary()
                )
                report_data = data.report_data() if isinstance(data, StreamedData) else data
                _write_train_report(result, report_data, out_dir, staging, context)
                if replacing and checkpoint.is_file():
                    checkpoint.replace(staging / CHECKPOINT_FILE)
    finally:
        if replacing:
            checkpoint.unlink(missing_ok=True)
    barrier(distributed)
    return result


def one_network_where_needed(
    config: TrainConfig, data: PreparedData | StreamedData, distributed: DistContext
) -> TrainConfig:
    """``config`` with ``members`` = 1 for a run that trains one network whatever it asks: a
    streamed table, torchrun or bf16 (the autograd backend); the saved model and the closing
    line then say 1. Every other run keeps its ``members``."""
    if config.members == 1:
        return config
    if isinstance(data, StreamedData) or choose_backend(config, distributed) == "autograd":
        return replace(config, members=1)
    return config


def check_report_fits(n_classes: int, n_validation: int, budget: int) -> None:
    """Refuse, before training, a run whose report could not be held in ``budget`` bytes.

    The report holds a ``C × C`` confusion matrix (int64) and the validation rows' ``N × C``
    probabilities with their float64 copies (about 32 bytes a cell in all), so with tens of
    thousands of classes it outgrows the machine; failing after the training would lose it.

    Raises:
        ConfigError: the estimate ``8·C² + 32·N·C`` bytes exceeds ``budget``.
    """
    needed = 8 * n_classes**2 + 32 * n_validation * n_classes
    if needed > budget:
        raise ConfigError(
            f"{n_classes:,} classes: the training report would need about {needed / 2**30:.1f} "
            f"GiB (a {n_classes:,} × {n_classes:,} confusion matrix and {n_validation:,} "
            f"validation rows × {n_classes:,} probabilities), more than the "
            f"{budget / 2**30:.1f} GiB a run may use (half of this machine's memory); train on "
            "fewer classes, or fit softclass.Classifier, which writes no report"
        )


def _fit(
    data: PreparedData | StreamedData,
    design: Design,
    model_config: MLPConfig,
    config: TrainConfig,
    checkpoint: Path,
    resume: bool,
    progress: ProgressCallback | None,
    distributed: DistContext,
) -> TrainResult:
    """The run on the backend that fits the data: streamed chunks, or tensors in memory."""
    if isinstance(data, StreamedData):
        return StreamedTrainer(
            design,
            model_config,
            config,
            data.chunks,
            data.window_chunks,
            data.identity,
            checkpoint_path=checkpoint,
            progress=progress,
            distributed=distributed,
            sync=data.sync,
            on_rows=data.epoch_progress(),
        ).fit_stream(resume=resume)
    return train_model(
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
