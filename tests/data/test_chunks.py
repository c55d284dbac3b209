"""data/chunks.py: a table read a chunk at a time gives the rows read_table gives, in order, in
chunks of at most N rows, with the same checks and messages."""

from __future__ import annotations

import gzip

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softclass.data import chunks as chunks_module
from softclass.data import read_table
from softclass.data.chunks import TableChunks, rebatch
from softclass.data.column_types import NUMBER, ColumnType
from softclass.errors import DataError
from softclass.limits import ReadLimitError, ReadLimits

N_ROWS = 50


def _frame(n_rows: int = N_ROWS) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "size": np.round(rng.normal(size=n_rows), 3),
            "color": [["red", "blue", "green"][index % 3] for index in range(n_rows)],
            "count": np.arange(n_rows),
            "kind": [["a", "b"][index % 2] for index in range(n_rows)],
        }
    )


def _write(tmp_path, kind: str):
    frame = _frame()
    if kind == "csv":
        path = tmp_path / "t.csv"
        frame.write_csv(path)
    elif kind == "csv.gz":
        path = tmp_path / "t.csv.gz"
        path.write_bytes(gzip.compress(frame.write_csv().encode()))
    elif kind == "parquet":
        path = tmp_path / "t.parquet"
        frame.write_parquet(path, row_group_size=9)
    elif kind == "directory":
        path = tmp_path / "parts"
        path.mkdir()
        frame.slice(0, 20).write_parquet(path / "part0.parquet")
        frame.slice(20).write_parquet(path / "part1.parquet")
    else:
        path = tmp_path / "t.jsonl"
        frame.write_ndjson(path)
    return path


@pytest.mark.parametrize("kind", ["csv", "csv.gz", "parquet", "directory", "jsonl"])
@pytest.mark.parametrize("chunk_rows", [1, 7, N_ROWS, N_ROWS + 13])
def test_chunks_give_the_rows_of_the_whole_table_in_order(tmp_path, kind, chunk_rows):
    path = _write(tmp_path, kind)
    chunks = TableChunks(path, chunk_rows=chunk_rows)
    parts = list(chunks)
    assert [part.height for part in parts[:-1]] == [chunk_rows] * (len(parts) - 1)
    assert 1 <= parts[-1].height <= chunk_rows
    whole = pl.concat(parts)
    assert whole.equals(read_table(path, raw=True))
    assert chunks.columns == ["size", "color", "count", "kind"]
    assert chunks.n_rows == (N_ROWS if kind in ("parquet", "directory") else None)
    assert pl.concat(list(chunks)).equals(whole)  # iterating again reads again


def test_json_lines_numbers_are_floats_so_a_later_fraction_fits(tmp_path, monkeypatch):
    monkeypatch.setattr(chunks_module, "_JSON_BLOCK_BYTES", 16)
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": null}\n\n{"a": 2.5, "b": "y"}\n')
    whole = pl.concat(list(TableChunks(path, chunk_rows=2)))
    assert whole["a"].to_list() == [1.0, 2.0, 2.5] and whole["b"].to_list() == ["x", None, "y"]


def test_a_json_line_that_does_not_fit_the_first_lines_names_its_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(chunks_module, "_JSON_BLOCK_BYTES", 16)
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": {"deep": 1}}\n')
    with pytest.raises(DataError, match=r"t\.jsonl: lines 3-3 cannot be read as JSON objects"):
        list(TableChunks(path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"the file is empty; expected one JSON object per line"),
        ('{"a": [1, 2]}\n', r"field 'a' holds List\(Int64\) values"),
        ("[1, 2]\nnot json\n", r"not JSON lines \(one JSON object per line\)"),
    ],
)
def test_json_lines_that_are_not_a_table_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "t.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        TableChunks(path)


def test_a_ragged_csv_row_in_a_later_chunk_is_named_as_the_whole_reader_names_it(tmp_path):
    rows = "".join(f"{index},x\n" for index in range(30))
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + rows + "1,2,3\n")
    with pytest.raises(DataError, match=r"t\.csv: row 32 has 3 fields but the header has 2"):
        list(TableChunks(path, chunk_rows=4))


def test_a_csv_header_without_rows_is_an_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n")
    with pytest.raises(DataError, match=r"has a header \('a', 'b'\) but no data rows"):
        list(TableChunks(path))


@pytest.mark.parametrize("chunk_rows", [0, -3, 2.5, True])
def test_chunk_rows_must_be_a_positive_whole_number(tmp_path, chunk_rows):
    path = _write(tmp_path, "csv")
    with pytest.raises(DataError, match=r"chunk_rows .*: expected a whole number, 1 or more"):
        TableChunks(path, chunk_rows=chunk_rows)


def test_the_limits_apply_to_chunks_as_to_a_whole_table(tmp_path):
    csv = _write(tmp_path, "csv")
    with pytest.raises(ReadLimitError, match=r"--max-cells raises it"):
        list(TableChunks(csv, chunk_rows=5, limits=ReadLimits(max_cells=4 * 12)))
    parquet = _write(tmp_path, "parquet")
    with pytest.raises(ReadLimitError, match=r"4 columns, more than the limit of 3"):
        TableChunks(parquet, limits=ReadLimits(max_columns=3))
    with pytest.raises(ReadLimitError, match=r"--max-cells raises it"):
        TableChunks(parquet, limits=ReadLimits(max_cells=10))


def test_fixed_column_types_read_every_chunk_alike_and_name_a_bad_cell_by_its_row(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,x\n2,y\n3,z\nlots,w\n")
    number = ColumnType("a", NUMBER)
    with pytest.raises(DataError, match=r"t\.csv: row 5, column 'a': 'lots'"):
        list(TableChunks(path, chunk_rows=2, column_types=[number]))
    good = tmp_path / "good.csv"
    good.write_text("a,b\n1,x\n2,y\n3,z\n")
    parts = list(TableChunks(good, chunk_rows=2, column_types=[number]))
    assert [part.schema["a"] for part in parts] == [pl.Float64, pl.Float64]
    with pytest.raises(DataError, match=r"column_types name column\(s\) 'c' the table"):
        TableChunks(good, column_types=[ColumnType("c", NUMBER)])


def test_a_missing_file_and_an_unknown_extension_are_the_whole_readers_errors(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.csv: no such file"):
        TableChunks(tmp_path / "nothing.csv")
    (tmp_path / "t.txt").write_text("a\n1\n")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'; expected one of"):
        TableChunks(tmp_path / "t.txt")


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 20), max_size=8),
    chunk_rows=st.integers(1, 25),
)
def test_rebatch_keeps_every_row_in_order_in_full_chunks(sizes, chunk_rows):
    start, frames = 0, []
    for size in sizes:
        frames.append(pl.DataFrame({"i": range(start, start + size)}))
        start += size
    out = list(rebatch(iter(frames), chunk_rows))
    assert all(frame.height == chunk_rows for frame in out[:-1])
    assert all(1 <= frame.height <= chunk_rows for frame in out)
    joined = pl.concat(out)["i"].to_list() if out else []
    assert joined == list(range(start))


def test_a_csv_row_longer_than_a_block_is_read_again_from_where_the_reading_stopped(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(chunks_module, "_CSV_BLOCK_BYTES", 64)
    rows = [f"{index},short" for index in range(40)]
    rows[25] = "25," + "long" * 50
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "\n".join(rows) + "\n")
    whole = pl.concat(list(TableChunks(path, chunk_rows=3)))
    assert whole.equals(read_table(path, raw=True))
    assert whole["a"].to_list() == [str(index) for index in range(40)]
