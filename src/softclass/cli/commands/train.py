"""``softclass train``: one design trained on a table and saved."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from softclass.cli.app import _Command, app, console
from softclass.cli.options import _DEFAULTS_HELP, _Typed, _with_options
from softclass.cli.progress import _ProgressBars
from softclass.cli.render import _measured_rows
from softclass.cli.run import (
    _distributed_context,
    _is_bundled_iris,
    _prepared_data,
    _resolve,
    _run_context,
    _torch_threads,
)
from softclass.errors import Interrupted

_TRAIN_HELP = "\n\n".join(
    (
        "Train one design on a table and save the model (with checkpoints, resumable).",
        _DEFAULTS_HELP,
        "Under torchrun (torchrun --nproc-per-node N -m softclass train ...) the N processes "
        "train together (DistributedDataParallel; gloo on CPU, nccl on CUDA) and rank 0 alone "
        "writes and prints.",
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
    with _distributed_context(config.device) as context:
        try:
            prepared = _prepared_data(data, options, config, show=context.is_main)
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
        if not context.is_main:
            return
        ranks = f" on {context.world_size} ranks ({context.backend})" if context.enabled else ""
        history = result.history
        kept = history.records[(history.best_epoch or history.epochs) - 1]
        console.print(
            f"design {chosen.name} ({chosen.title}): {history.epochs} epochs{ranks}, "
            f"training loss {kept.train_loss:.4f}{_measured_rows(history, config)}; model "
            f"saved to {out}",
            highlight=False,
            soft_wrap=True,
        )
