"""``softclass predict``: class probabilities for each row of a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from softclass.cli.app import _Command, _write_stdout_bytes, app, err_console
from softclass.cli.options import _Delimiter, _Unknown
from softclass.cli.run import _delimiter
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


def _limit_option(name: str, kind: type, text: str) -> object:
    from softclass.limits import DEFAULT_LIMITS

    return Annotated[
        kind | None,
        typer.Option(
            "--" + name.replace("_", "-"),
            metavar="N",
            help=f"{text} [default: {getattr(DEFAULT_LIMITS, name):,}]",
            show_default=False,
            rich_help_panel="Data",
        ),
    ]


_MaxBytes = _limit_option("max_bytes", int, "Most bytes a .gz/.bz2/.zst table may decompress to.")
_MaxRatio = _limit_option(
    "max_ratio", float, "Most a compressed table may grow when decompressed (times)."
)
_MaxColumns = _limit_option("max_columns", int, "Most columns a table may have.")
_MaxCells = _limit_option("max_cells", int, "Most rows × columns a table may have.")
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
    unknown: _Unknown = "ignore",
    accuracy: Annotated[
        bool,
        typer.Option(
            "--accuracy",
            help="Measure accuracy on the target column (else the column is ignored).",
        ),
    ] = False,
    delimiter: _Delimiter = None,
    chunk_rows: _ChunkRows = PREDICT_CHUNK_ROWS,
    quiet: _Quiet = False,
    max_bytes: _MaxBytes = None,
    max_ratio: _MaxRatio = None,
    max_columns: _MaxColumns = None,
    max_cells: _MaxCells = None,
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
    limits = _limits(max_bytes, max_ratio, max_columns, max_cells)
    chunks = TableChunks(
        data, chunk_rows=chunk_rows, delimiter=_delimiter(delimiter), limits=limits
    )
    stream = PredictionStream(saved, chunks, unknown=unknown, accuracy=accuracy, source=str(data))
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


def _limits(max_bytes, max_ratio, max_columns, max_cells):
    """The read limits: each flag given replaces its default."""
    import dataclasses

    from softclass.limits import DEFAULT_LIMITS

    given = {
        "max_bytes": max_bytes,
        "max_ratio": max_ratio,
        "max_columns": max_columns,
        "max_cells": max_cells,
    }
    for name, value in given.items():
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} {value}: expected a positive number")
    return dataclasses.replace(
        DEFAULT_LIMITS, **{name: value for name, value in given.items() if value is not None}
    )


class _Progress:
    """Rows done and rows per second on stderr: a bar on a terminal; otherwise a line every
    :data:`_PROGRESS_SECONDS` and, after those, one at the end (a log file then shows the run is
    alive)."""

    def __init__(self, total: int | None, enabled: bool, clock=None) -> None:
        import time

        self._clock = clock or time.monotonic
        self._total = total
        self._enabled = enabled
        self._live = enabled and err_console.is_terminal
        self._bar = None
        self.rows = 0
        self._lines = 0
        self._started = self._last = self._clock()

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
            self._task = self._bar.add_task("predict", total=self._total, speed="")
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
        self.rows += rows
        now = self._clock()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.rows, speed=self._speed(now))
        elif self._enabled and now - self._last >= _PROGRESS_SECONDS:
            self._last = now
            total = f" of {self._total:,}" if self._total else ""
            self._line(f"predict: {self.rows:,}{total} rows done, {self._speed(now)}")

    def finish(self, how: str) -> None:
        """The closing line, when lines were shown (a run shorter than the interval is quiet:
        its output and exit code say everything)."""
        if self._enabled and self._lines:
            now = self._clock()
            self._line(
                f"predict: {self.rows:,} rows done in {now - self._started:.1f} s, "
                f"{self._speed(now)} ({how})"
            )

    def _speed(self, now: float) -> str:
        return f"{self.rows / max(now - self._started, 1e-9):,.0f} rows/s"

    def _line(self, text: str) -> None:
        self._lines += 1
        err_console.line(text)


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
