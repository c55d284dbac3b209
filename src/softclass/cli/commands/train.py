"""``softclass train``: one design trained on a table and saved."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from softclass.cli.app import _Command, app, console, err_console
from softclass.cli.options import _DEFAULTS_HELP, _Typed, _with_options
from softclass.cli.progress import _ProgressBars
from softclass.cli.render import _measured_rows, _print_typing_table
from softclass.cli.run import (
    _distributed_context,
    _is_bundled_iris,
    _library_values,
    _prepared_data,
    _read_options,
    _resolve,
    _run_context,
    _torch_threads,
)
from softclass.errors import Interrupted

if TYPE_CHECKING:
    from softclass.data.prepare import PreparedData
    from softclass.jobs.stream_train import StreamedData
    from softclass.training.config import TrainConfig
    from softclass.training.distributed import DistContext

_TRAIN_HELP = "\n\n".join(
    (
        "Train one design on a table and save the model (with checkpoints, resumable).",
        _DEFAULTS_HELP,
        "Under torchrun (torchrun --nproc-per-node N -m softclass train ...) the N processes "
        "train together (gloo on CPU, nccl on CUDA; a table in memory under "
        "DistributedDataParallel, a streamed one as --sync says) and rank 0 alone writes and "
        "prints.",
    )
)


@app.command(cls=_Command, help=_TRAIN_HELP)
@_with_options("train")
def train(
    data: Annotated[Path, typer.Argument(help="CSV or Parquet training table.", metavar="DATA")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Model directory to write.")],
    design: Annotated[
        str | None,
        typer.Option(
            "--design",
            metavar="LETTER",
            help="{designs} (default: the reference design, {reference}).",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the checkpoint in --out.")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace the model already in --out (its files change together, at the end).",
        ),
    ] = False,
    *,
    options: _Typed,
) -> None:
    """Train one design on a table and save the model (with checkpoints, resumable)."""
    from softclass.errors import TrainingDiverged
    from softclass.jobs.destination import check_output_directory, unit_fingerprint
    from softclass.jobs.train_predict import describe_kept, train_to_directory
    from softclass.mlp.designs import REFERENCE, get_design

    out = check_output_directory(out, "train", inputs=[data], overwrite=overwrite, resume=resume)
    before = unit_fingerprint(out)
    chosen = get_design(REFERENCE if design is None else design)
    network = _resolve(_is_bundled_iris(data), options)
    config = network.config
    prepared = None
    with _distributed_context(config.device) as context:
        try:
            prepared = _training_data(data, options, config, context)
            with (
                _torch_threads(config, prepared, network.hidden),
                _ProgressBars(enabled=context.is_main) as bars,
            ):
                result = train_to_directory(
                    prepared,
                    chosen,
                    out,
                    config,
                    hidden=network.hidden,
                    activation=network.activation,
                    resume=resume,
                    progress=bars,
                    distributed=context,
                    context=_run_context(data),
                    overwrite=overwrite,
                )
        except Interrupted as interrupt:
            interrupt.kept = describe_kept(out, before)
            raise
        except TrainingDiverged as diverged:
            raise TrainingDiverged(f"{diverged}; {describe_kept(out, before)}") from diverged
        finally:
            if prepared is not None and hasattr(prepared, "close"):
                prepared.close()  # the streamed chunks' scratch directory
        if not context.is_main:
            return
        ranks = f" on {context.world_size} ranks ({context.backend})" if context.enabled else ""
        ranks += _path_text(prepared, context)
        history = result.history
        kept = history.records[(history.best_epoch or history.epochs) - 1]
        trained = _trained_text(config, result.config)
        console.line(
            f"design {chosen.name} ({chosen.title}{trained}): {history.epochs} epochs{ranks}, "
            f"training loss {kept.train_loss:.4f}{_measured_rows(history, config)}; model "
            f"saved to {out}"
        )


def _trained_text(asked: TrainConfig, trained: TrainConfig) -> str:
    """The label smoothing and the networks averaged, for the closing line: ``asked`` is the
    run's configuration, ``trained`` the one it trained with (one network under torchrun, bf16
    or a streamed table)."""
    text = f", label smoothing {asked.label_smoothing:g}" * bool(asked.label_smoothing)
    members = trained.members
    text += f", mean of {members} networks (epochs: the first's)" * (members > 1)
    if members < asked.members:
        text += f", one network (members {asked.members} needs one fp32 in-memory run)"
    return text


def _training_data(
    data: Path | None, options: _Typed, config: TrainConfig, context: DistContext
) -> PreparedData | StreamedData:
    """The table in memory, or streamed from disk when the in-memory path would need more than
    ``--memory`` (:func:`softclass.jobs.stream_train.choose_streamed`)."""
    from softclass.data.stream import TableSource, streamable
    from softclass.jobs.stream_train import choose_streamed, default_memory, prepare_streamed

    values = {spec.library: value for spec, value in _library_values(options).items()}
    memory = values.get("memory") or default_memory()
    if data is None or not streamable(data) or _is_bundled_iris(data):
        return _prepared_data(data, options, config, show=context.is_main)
    delimiter, typing = _read_options(options)
    source = TableSource(data, delimiter=delimiter)
    if not choose_streamed(source, memory):
        return _prepared_data(data, options, config, show=context.is_main)
    recipe_names = ("normalization", "divisors", "missing", "keep", "drop", "ids")
    streamed = prepare_streamed(
        data,
        memory=memory,
        validation_fraction=config.validation_fraction,
        seed=config.seed,
        distributed=context,
        delimiter=delimiter,
        target=values.get("target"),
        unknown=values.get("unknown", "ignore"),
        options={name: values[name] for name in recipe_names if name in values}
        | {"typing": typing},
        progress=lambda text: err_console.line(text),
        sync=values.get("sync", "auto"),
    )
    if context.is_main:
        _print_typing_table(streamed.recipe)
        for warning in streamed.warnings:
            err_console.line(f"[yellow]warning:[/] {warning}")
    return streamed


def _path_text(prepared: PreparedData | StreamedData, context: DistContext) -> str:
    """In memory or streamed, and how the ranks kept in step, for the closing line."""
    chunks = getattr(prepared, "n_chunks", None)
    if chunks is None:
        return ", in memory"
    if not context.enabled:
        return f", streamed, {chunks} chunks"
    from softclass.training.streamed import resolve_sync

    mode = resolve_sync(prepared.sync, context.device)
    how = "ranks shared the data" if mode == "data" else "gradients all-reduced every step"
    return f", streamed, {chunks} chunks, {how} (--sync {mode})"
