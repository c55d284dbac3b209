"""``softclass compare``: designs side by side on one table."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from softclass.cli.app import _Command, _write_stdout, app, err_console
from softclass.cli.options import _DEFAULTS_HELP, _DataArgument, _Typed, _with_options
from softclass.cli.progress import _ProgressBars
from softclass.cli.render import _print_comparison
from softclass.cli.run import (
    _distributed_context,
    _is_bundled_iris,
    _prepared_data,
    _resolve,
    _run_context,
    _torch_threads,
)
from softclass.errors import Interrupted
from softclass.jobs.defaults import TABLE

_COMPARE_HELP = "\n\n".join(
    (
        "Train the same network with every design on the same data, split and seed, and compare "
        "them on the same held-out rows.",
        _DEFAULTS_HELP,
        "Under torchrun (torchrun --nproc-per-node N -m softclass compare ...) every design "
        "trains data parallel on the N processes; rank 0 alone writes and prints.",
    )
)


@app.command(cls=_Command, help=_COMPARE_HELP)
@_with_options("compare")
def compare(
    data: _DataArgument = None,
    seeds: Annotated[
        int, typer.Option("--seeds", metavar="K", help="Seeds to run (seed, seed+1, ...).")
    ] = 1,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Output directory: report.html (open it), report.json, history.json, PNG "
            "plots and one model per design (default runs/compare-DATE-TIME).",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace the comparison already in --out (its files change together, at the end).",
        ),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    design: Annotated[
        str | None,
        typer.Option(
            "--design",
            metavar="LETTERS",
            help="Designs to train from {designs}, e.g. AB (default: all of them).",
            show_default=False,
        ),
    ] = None,
    stopping: Annotated[
        float,
        typer.Option(
            "--stopping",
            metavar="FRACTION",
            help="With --patience: share of the training rows held out to choose the epoch on, "
            "apart from the validation rows (three-way split).",
        ),
    ] = TABLE.stopping_fraction,
    *,
    options: _Typed,
) -> None:
    """Train the same network with every design on the same data, split and seed; compare them."""
    import json

    from softclass.jobs.compare import describe_written
    from softclass.jobs.destination import check_output_directory, unit_fingerprint

    if out is None:
        out = Path("runs") / f"compare-{_stamp()}"
    inputs = [] if data is None else [data]
    out = check_output_directory(out, "compare", inputs=inputs, overwrite=overwrite)
    before = unit_fingerprint(out)
    network = _resolve(_is_bundled_iris(data), options)
    # The table's averaged members are train's (compare has no --members): one network each.
    network = dataclasses.replace(network, config=dataclasses.replace(network.config, members=1))
    with _distributed_context(network.config.device) as context:
        quiet = json_output or not context.is_main
        try:
            prepared = _prepared_data(data, options, network.config, show=not quiet)
            if design is None:
                design, prepared = _default_designs(prepared, network.config, quiet)
            result = _run_comparison(
                prepared, network, context, data, design, seeds, out, stopping, overwrite, quiet
            )
        except Interrupted as interrupt:
            interrupt.kept = describe_written(out, before)
            raise
        if not context.is_main:
            return
        if json_output:
            report = {"columns": prepared.recipe.typing_table(), **result.to_dict()}
            _write_stdout(json.dumps(report) + "\n")
            return
        _print_comparison(result, "the bundled Iris" if data is None else str(data))


def _default_designs(prepared, config, quiet: bool) -> tuple[str, object]:
    """Every design that can take the run's options, and the prepared data with a note naming
    any left out (said now too, unless ``quiet``)."""
    from softclass.mlp.designs import designs_for

    names, left_out = designs_for(config.label_smoothing)
    if left_out:
        prepared = dataclasses.replace(prepared, warnings=(*prepared.warnings, left_out))
        if not quiet:
            err_console.line(f"[yellow]warning:[/] {left_out}")
    return "".join(names), prepared


def _stamp() -> str:
    import datetime

    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _run_comparison(
    prepared, network, context, data, design, seeds, out, stopping, overwrite, quiet
) -> object:
    """Train and compare the designs on ``prepared`` (progress bars unless ``quiet``)."""
    from softclass.jobs.compare import compare as run_comparison

    config = network.config
    with (
        _torch_threads(config, prepared, network.hidden),
        _ProgressBars(enabled=not quiet) as bars,
    ):
        return run_comparison(
            prepared,
            design,
            config,
            hidden=network.hidden,
            activation=network.activation,
            seeds=seeds,
            out_dir=out,
            progress=bars,
            distributed=context,
            stopping_fraction=stopping,
            defaults=network.defaults,
            context=_run_context(data),
            overwrite=overwrite,
        )
