"""``softclass predict``: class probabilities for each row of a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from softclass.cli.app import _Command, _write_stdout_bytes, app, err_console
from softclass.cli.options import _Typed, _with_options
from softclass.cli.run import _delimiter, _read_limits
from softclass.errors import ConfigError, DataError, Interrupted

_PREDICT_HELP = "\n\n".join(
    (
        "Class probabilities and the predicted class name for each row of a table.",
        "Probability columns are named by their classes (proba_NAME when a class is called row "
        "or predicted, or would collide with another column).",
        "The table is read, predicted and written a chunk of rows at a time (--chunk-rows), so "
        "memory does not grow with the table. A table of more than one chunk always gets the "
        "reason column (empty for predicted rows); a table of one chunk only when some row has "
        "no prediction.",
    )
)

PREDICT_CHUNK_ROWS = 20_000
"""Rows per chunk: preparing and predicting costs about 5 KB a row of the chunk on a table of
~170 features (1M rows: 584 MiB peak at 20,000 rows a chunk, 968 MiB at 100,000, same speed)."""

_PROGRESS_SECONDS = 5.0  # without a terminal, a progress line on stderr this often


_Data = Annotated[
    Path, typer.Argument(help="CSV, Parquet or JSON-lines table of raw rows.", metavar="DATA")
]
_ChunkRows = Annotated[
    int,
    typer.Option("--chunk-rows", metavar="N", help="Rows read, predicted and written at a time."),
]
_Quiet = Annotated[
    bool, typer.Option("--quiet", help="No progress on stderr (warnings still shown).")
]


@app.command(cls=_Command, help=_PREDICT_HELP)
@_with_options("predict")
def predict(
    model_dir: Annotated[
        Path, typer.Argument(help="Model directory written by train/compare.", metavar="MODEL_DIR")
    ],
    data: _Data,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="csv, json (one array), jsonl (one JSON object per line) or parquet (needs "
            "--output); default: from the --output extension, else csv. --format json is --json.",
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
    accuracy: Annotated[
        bool,
        typer.Option(
            "--accuracy",
            help="Measure accuracy on the target column (else the column is ignored).",
        ),
    ] = False,
    chunk_rows: _ChunkRows = PREDICT_CHUNK_ROWS,
    quiet: _Quiet = False,
    *,
    options: _Typed,
) -> None:
    """Class probabilities and the predicted class name for each row of a table (the row column
    counts rows as every message does: header = row 1, first data row = 2)."""
    from softclass.data import ERROR_POLICIES
    from softclass.data.checks import check_choice
    from softclass.data.chunks import TableChunks
    from softclass.jobs.destination import check_output_file
    from softclass.jobs.predict import PredictionStream
    from softclass.jobs.store import load_model

    output_format = _output_format(output_format, json_output, output)
    check_choice("on_error", on_error, ERROR_POLICIES)
    if output is not None:
        output = check_output_file(output, [model_dir, data], "--output")
    saved = load_model(model_dir)
    if chunk_rows < 1:
        raise ConfigError(f"--chunk-rows {chunk_rows}: expected a number of rows, 1 or more")
    chunks = TableChunks(
        data,
        chunk_rows=chunk_rows,
        delimiter=_delimiter(options.delimiter),
        limits=_read_limits(options),
    )
    stream = PredictionStream(
        saved, chunks, unknown=options.unknown, accuracy=accuracy, source=str(data)
    )
    with _Progress(chunks.n_rows, enabled=not quiet) as progress:
        _write_prediction(progress.counted(stream), output_format, output, raw)
        progress.finish(_how(stream, chunk_rows))
    _report(stream, on_error, saved.recipe.target)


def _report(stream, on_error: str, target: str) -> None:
    """The warnings and the accuracy on stderr once the output is written; DataError (exit 2)
    when some row has no prediction under ``--on-error error``."""
    unpredicted = stream.unpredicted()
    for warning in stream.warnings:
        if warning != unpredicted or on_error == "skip":
            err_console.line(f"[yellow]warning:[/] {warning}")
    if stream.accuracy is not None:
        err_console.line(
            f"accuracy {stream.accuracy:.3f} on {stream.counted} rows with a known class in "
            f"{target!r}"
        )
    if unpredicted is not None and on_error == "error":
        raise DataError(f"{unpredicted}; --on-error skip accepts such rows (exit 0)")


def _how(stream, chunk_rows: int) -> str:
    return f"streamed in chunks of {chunk_rows:,} rows" if stream.streamed else "in one chunk"


class _Progress:
    """Rows done and rows per second on stderr: a bar on a terminal; otherwise the lines of
    :class:`~softclass.jobs.stream_train.RowProgress`, one every :data:`_PROGRESS_SECONDS` and,
    after those, one at the end (a log file then shows the run is alive)."""

    def __init__(self, total: int | None, enabled: bool, clock=None) -> None:
        import time

        from softclass.jobs.stream_train import RowProgress

        self._live = enabled and err_console.is_terminal
        line = err_console.line if enabled and not self._live else lambda _: None
        self._rows = RowProgress(
            "predict", total, line, interval=_PROGRESS_SECONDS, clock=clock or time.monotonic
        )
        self._bar = None

    def __enter__(self) -> _Progress:
        if self._live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._bar = Progress(
                "predicting",
                BarColumn(),
                MofNCompleteColumn(),
                "{task.fields[speed]}",
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("predict", total=self._rows.total, speed="")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc_info)

    def counted(self, frames):
        """``frames`` passed through, their rows counted and shown."""
        for frame in frames:
            yield frame
            self.advance(frame.height)

    def advance(self, rows: int) -> None:
        self._rows.advance(rows)
        if self._bar is not None:
            speed = self._rows.speed(self._rows.clock())
            self._bar.update(self._task, completed=self._rows.rows, speed=speed)

    def finish(self, how: str) -> None:
        """The closing line, when lines were shown (a run shorter than the interval is quiet:
        its output and exit code say everything)."""
        self._rows.finish(f" ({how})")


def _write_prediction(frames, output_format: str, output: Path | None, raw: bool) -> None:
    """Write the prediction chunks to stdout, or into ``output`` (renamed into place at the end:
    an interrupted or failed write leaves an earlier file there whole)."""
    from softclass.io import atomic_path, translate_os_error
    from softclass.jobs.output import ParquetSink, serialized_frames, spreadsheet_safe

    if output_format == "csv" and not raw:
        frames = (spreadsheet_safe(frame) for frame in frames)
    if output is None:
        for chunk in serialized_frames(frames, output_format):
            _write_stdout_bytes(chunk)
        return
    try:
        with atomic_path(output) as temporary, translate_os_error(output):
            if output_format == "parquet":
                with ParquetSink(temporary) as sink:
                    for frame in frames:
                        sink.write(frame)
            else:
                with open(temporary, "wb") as handle:
                    for chunk in serialized_frames(frames, output_format):
                        handle.write(chunk)
    except Interrupted as interrupt:
        interrupt.kept = f"nothing was written to {output} (an earlier file there is kept)"
        raise


def _output_format(output_format: str | None, json_output: bool, output: Path | None) -> str:
    """One of the output formats from ``--format``, ``--json`` (the flag every command spells
    alike) and the extension of ``--output``; ConfigError for another format, parquet to stdout
    or the two flags asking for different ones."""
    from softclass.jobs.output import format_of

    if json_output and output_format not in (None, "json"):
        raise ConfigError(
            f"--json and --format {output_format} ask for different outputs: give one of them"
        )
    try:
        return format_of("json" if json_output else output_format, output)
    except ValueError as error:
        raise ConfigError(str(error)) from None
