"""``softclass predict``: class probabilities for each row of a table."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from softclass.cli.app import _Command, _write_stdout_bytes, app, err_console
from softclass.cli.options import _Delimiter, _Unknown
from softclass.cli.run import _delimiter
from softclass.errors import DataError, Interrupted

_PREDICT_HELP = "\n\n".join(
    (
        "Class probabilities and the predicted class name for each row of a table.",
        "Probability columns are named by their classes (proba_NAME when a class is called row "
        "or predicted, or would collide with another column).",
    )
)


@app.command(cls=_Command, help=_PREDICT_HELP)
def predict(
    model_dir: Annotated[
        Path, typer.Argument(help="Model directory written by train/compare.", metavar="MODEL_DIR")
    ],
    data: Annotated[Path, typer.Argument(help="CSV or Parquet table of raw rows.", metavar="DATA")],
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="csv (default), json (one array) or jsonl (one JSON object per line); "
            "--format json is --json.",
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON (one array of rows), as --format json.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write to this file instead of stdout.")
    ] = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="CSV: write class names exactly as trained. By default a name starting with "
            "= + - @ (a spreadsheet formula) gets a leading ' and control characters become "
            "U+FFFD.",
        ),
    ] = False,
    on_error: Annotated[
        str,
        typer.Option(
            "--on-error",
            help="A row that cannot be predicted (a bad cell): error (exit 2) or skip (exit 0). "
            "Either way the output has one row per input row; such a row has an empty "
            "prediction and a reason.",
        ),
    ] = "error",
    unknown: _Unknown = "ignore",
    accuracy: Annotated[
        bool,
        typer.Option(
            "--accuracy",
            help="Measure accuracy on the target column (else the column is ignored).",
        ),
    ] = False,
    delimiter: _Delimiter = None,
) -> None:
    """Class probabilities and the predicted class name for each row of a table.

    The row column counts rows as every message does: header = row 1, first data row = 2.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from softclass.data import ERROR_POLICIES, read_table
    from softclass.data.checks import check_choice
    from softclass.jobs.destination import check_output_file
    from softclass.jobs.output import spreadsheet_safe
    from softclass.jobs.predict import predict_table, unpredicted_message
    from softclass.jobs.store import load_model

    output_format = _output_format(output_format, json_output)
    check_choice("on_error", on_error, ERROR_POLICIES)
    if output is not None:
        output = check_output_file(output, [model_dir, data], "--output")
    saved = load_model(model_dir)
    delimiter = _delimiter(delimiter)
    live = err_console.is_terminal  # progress only on a terminal: a pipe gets just the results
    with err_console.status(f"reading {data} …") if live else contextlib.nullcontext():
        table = read_table(data, delimiter=delimiter, raw=True)
    with Progress(
        "predicting",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not live,
    ) as bar:
        task = bar.add_task("predict", total=table.height)
        prediction = predict_table(
            saved,
            table,
            on_error="skip",
            unknown=unknown,
            accuracy=accuracy,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            source=str(data),
        )
    unpredicted = (
        unpredicted_message(prediction.skipped, table.height, str(data))
        if prediction.skipped
        else None
    )
    for warning in prediction.warnings:
        if warning != unpredicted or on_error == "skip":
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    table = prediction.table
    if output_format == "csv" and not raw:
        table = spreadsheet_safe(table)
    _write_prediction(table, output_format, output)
    if prediction.accuracy is not None:
        counted = prediction.table.height - len(prediction.skipped) - prediction.unknown_labels
        err_console.print(
            f"accuracy {prediction.accuracy:.3f} on {counted} rows with a known class in "
            f"{saved.recipe.target!r}",
            highlight=False,
            soft_wrap=True,
        )
    if unpredicted is not None and on_error == "error":
        raise DataError(f"{unpredicted}; --on-error skip accepts such rows (exit 0)")


def _write_prediction(table, output_format: str, output: Path | None) -> None:
    """Stream ``table`` in chunks to stdout, or into ``output`` (renamed into place at the end:
    an interrupted or failed write leaves an earlier file there whole)."""
    from softclass.io import atomic_path, translate_os_error
    from softclass.jobs.output import serialized_chunks

    chunks = serialized_chunks(table, output_format)
    if output is None:
        for chunk in chunks:
            _write_stdout_bytes(chunk)
        return
    try:
        with atomic_path(output) as temporary, translate_os_error(output):
            with open(temporary, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
    except Interrupted as interrupt:
        interrupt.kept = f"nothing was written to {output} (an earlier file there is kept)"
        raise


def _output_format(output_format: str | None, json_output: bool) -> str:
    """One of the output formats from ``--format`` and ``--json`` (the flag every command spells
    alike); ConfigError for another format or the two flags asking for different ones."""
    from softclass.errors import ConfigError
    from softclass.jobs.output import FORMATS

    if output_format is not None and output_format not in FORMATS:
        raise ConfigError(f"--format {output_format!r}: expected one of {', '.join(FORMATS)}")
    if json_output and output_format not in (None, "json"):
        raise ConfigError(
            f"--json and --format {output_format} ask for different outputs: give one of them"
        )
    return "json" if json_output else output_format or "csv"
