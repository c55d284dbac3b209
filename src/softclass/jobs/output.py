"""Text that leaves softclass for spreadsheets and terminals, made safe to open and to print.

Class names and column names come from the user's data (or a model directory, which is input
too), so they may hold anything: a cell such as ``=HYPERLINK("http://…")`` runs as a formula when
the CSV is opened in a spreadsheet, and ANSI escapes or other control characters rewrite the
terminal they are printed on. :func:`neutralise_cell` (CSV cells, after OWASP's CSV-injection
advice), :func:`terminal_text` and :func:`probability_columns` make them safe;
:func:`serialized_chunks`, :func:`serialized_frames` and :class:`ParquetSink` write a prediction
table a chunk of rows at a time, so that writing it never holds the whole text in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import polars as pl

__all__ = [
    "CHUNK_ROWS",
    "FORMATS",
    "FORMULA_PREFIXES",
    "RESERVED_COLUMNS",
    "ParquetSink",
    "format_of",
    "neutralise_cell",
    "probability_columns",
    "serialized_chunks",
    "serialized_frames",
    "spreadsheet_safe",
    "terminal_text",
]

FORMATS = ("csv", "json", "jsonl", "parquet")
TEXT_FORMATS = ("csv", "json", "jsonl")
_EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_EXTENSIONS |= {".parquet": "parquet", ".pq": "parquet"}
CHUNK_ROWS = 65_536  # rows serialized at a time: a few MB of text, whatever the table's size
ROW_COLUMN = "row"
PREDICTED_COLUMN = "predicted"
REASON_COLUMN = "reason"  # why a row has no prediction (empty when it has one)
RESERVED_COLUMNS = (ROW_COLUMN, PREDICTED_COLUMN, REASON_COLUMN)
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_PROBABILITY_PREFIX = "proba_"
_REPLACEMENT = "\N{REPLACEMENT CHARACTER}"
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# CSI (ESC [ … final byte), OSC (ESC ] … BEL or ESC \), and the other two-byte ESC sequences.
_ESCAPE_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]"
)
_BIDI = "\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
_CONTROL_IN_CELL = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")


def neutralise_cell(text: str) -> str:
    """``text`` safe as a CSV cell opened in a spreadsheet: ``'`` before a formula-like start
    (``= + - @``, tab, CR) unless the whole cell is a plain number; control characters → U+FFFD.
    """
    if text.startswith(FORMULA_PREFIXES) and not _NUMBER.fullmatch(text):
        text = "'" + text
    return _CONTROL_IN_CELL.sub(_REPLACEMENT, text)


def terminal_text(text: str) -> str:
    """``text`` safe to print on a terminal: escape sequences removed, other control characters
    and bidirectional overrides replaced by U+FFFD; newlines and tabs kept."""
    return _CONTROL.sub(_REPLACEMENT, _ESCAPE_SEQUENCE.sub("", text))


def probability_columns(classes: Sequence[str]) -> list[str]:
    """Column names for the probabilities of ``classes``, in order: each class's own name,
    unless it is ``row`` or ``predicted`` or taken by an earlier column, in which case it is
    prefixed with ``proba_`` (repeatedly) until it is distinct from every column and class name.

    ``["row", "proba_row"]`` gives ``["proba_proba_row", "proba_row"]``: both columns survive.
    """
    used = set(RESERVED_COLUMNS)
    class_names = set(classes)
    columns = []
    for name in classes:
        column = name
        while column in used or (column != name and column in class_names):
            column = _PROBABILITY_PREFIX + column
        used.add(column)
        columns.append(column)
    return columns


def spreadsheet_safe(table: pl.DataFrame) -> pl.DataFrame:
    """A prediction table (``row``, probability columns, ``predicted``) with every column name
    and text cell passed through :func:`neutralise_cell`; probability columns renamed by
    :func:`probability_columns` again should neutralising make two names equal."""
    middle = [name for name in table.columns if name not in RESERVED_COLUMNS]
    renamed = probability_columns([neutralise_cell(name) for name in middle])
    text_columns = [name for name, dtype in table.schema.items() if dtype == pl.String]
    # Few distinct values (class names) in many rows: neutralise each once, then map.
    safe = table.with_columns(
        pl.col(name).replace(
            {value: neutralise_cell(value) for value in table[name].drop_nulls().unique()}
        )
        for name in text_columns
    )
    return safe.rename(dict(zip(middle, renamed, strict=True)))


def format_of(output_format: str | None, output: Path | None) -> str:
    """The output format: ``output_format`` when given, else the one ``output``'s extension
    names (``.csv``, ``.json``, ``.jsonl``/``.ndjson``, ``.parquet``/``.pq``), else "csv".

    Raises:
        ValueError: ``output_format`` is not one of :data:`FORMATS`, or is "parquet" without
            an output file (Parquet is binary and written with its footer last: not for a
            terminal or a pipe).
    """
    if output_format is None and output is not None:
        output_format = _EXTENSIONS.get(output.suffix.lower())
    output_format = output_format or "csv"
    if output_format not in FORMATS:
        raise ValueError(f"--format {output_format!r}: expected one of {', '.join(FORMATS)}")
    if output_format == "parquet" and output is None:
        raise ValueError("--format parquet needs --output FILE: Parquet is not written to stdout")
    return output_format


def serialized_chunks(
    table: pl.DataFrame, output_format: str, chunk_rows: int = CHUNK_ROWS
) -> Iterator[bytes]:
    """``table`` as UTF-8 text in pieces of ``chunk_rows`` rows: "csv" (header first), "json"
    (one array, one object per line) or "jsonl" (one object per line, no array).

    The pieces joined are the whole document; each holds at most ``chunk_rows`` rows' text.
    """
    slices = (
        table.slice(start, chunk_rows) for start in range(0, max(table.height, 1), chunk_rows)
    )
    return serialized_frames(slices, output_format)


def serialized_frames(frames: Iterable[pl.DataFrame], output_format: str) -> Iterator[bytes]:
    """The rows of ``frames`` (all with the same columns) as one UTF-8 document in the text
    format ``output_format`` ("csv", "json" or "jsonl"), a piece per frame (header or ``[``
    with the first)."""
    if output_format not in TEXT_FORMATS:
        raise ValueError(
            f"output_format {output_format!r}: expected one of {', '.join(TEXT_FORMATS)}"
        )
    if output_format == "json":
        yield b"["
    first = True
    for chunk in frames:
        if output_format == "csv":
            yield chunk.write_csv(include_header=first).encode("utf-8")
            first = False
        elif chunk.height:
            lines = chunk.write_ndjson()
            if output_format == "json":
                lines = ("\n" if first else ",\n") + lines.rstrip("\n").replace("\n", ",\n")
            first = False
            yield lines.encode("utf-8")
    if output_format == "json":
        yield b"\n]\n"


class ParquetSink:
    """Write prediction chunks into one Parquet file (``path``), a row group per chunk.

    The schema is the first chunk's; a later chunk is cast to it (an id column that is all
    missing in one chunk, say). Use as a context manager: the file is complete (its footer
    written) when the block ends without an error.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._writer = None

    def write(self, chunk: pl.DataFrame) -> None:
        import pyarrow.parquet as pa_parquet

        table = chunk.to_arrow()
        if self._writer is None:
            self._writer = pa_parquet.ParquetWriter(str(self._path), table.schema)
        elif table.schema != self._writer.schema:
            table = table.cast(self._writer.schema)
        self._writer.write_table(table)

    def __enter__(self) -> ParquetSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._writer is not None:
            self._writer.close()
