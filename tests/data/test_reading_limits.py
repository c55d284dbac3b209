"""Reading stops with one line at documented limits: a small file cannot take all the memory."""

import bz2
import gzip

import polars as pl
import pyarrow as pa
import pytest

from softclass.data import read_table
from softclass.limits import DEFAULT_LIMITS, ReadLimitError, ReadLimits

ROW = b"1,2,3\n"


def _compressed(path, codec: str, rows: int) -> None:
    """A CSV of ``rows`` (a multiple of 65,536) rows as concatenated compressed streams: one
    block compressed once, written again and again (bz2 is slow to compress 18 MB)."""
    compress = {"gzip": gzip.compress, "bz2": bz2.compress, "zstd": _zstd}[codec]
    block = compress(ROW * 65_536)
    path.write_bytes(compress(b"a,b,c\n") + block * (rows // 65_536))


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize(("suffix", "codec"), [("gz", "gzip"), ("bz2", "bz2"), ("zst", "zstd")])
def test_a_decompression_bomb_stops_at_the_ratio(tmp_path, suffix, codec):
    path = tmp_path / f"bomb.csv.{suffix}"
    _compressed(path, codec, 65_536 * 48)  # 18 MB of text in a few kB
    with pytest.raises(ReadLimitError, match=r"decompresses more than 100 times .*--max-ratio"):
        read_table(path)


def test_the_ratio_limit_can_be_raised_and_the_byte_limit_still_holds(tmp_path):
    path = tmp_path / "bomb.csv.gz"
    _compressed(path, "gzip", 65_536 * 48)
    limits = ReadLimits(max_ratio=1e9, max_bytes=10_000_000)
    with pytest.raises(ReadLimitError, match=r"more than 10,000,000 bytes once .*--max-bytes"):
        read_table(path, limits=limits)
    table = read_table(path, limits=ReadLimits(max_ratio=1e9), raw=True)
    assert table.shape == (65_536 * 48, 3)


def test_a_small_compressed_file_reads_whatever_its_ratio(tmp_path):
    path = tmp_path / "small.csv.gz"
    _compressed(path, "gzip", 65_536)
    assert read_table(path).height == 65_536


def test_too_many_columns_stop_at_the_header(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(12)) + "\n" + ",".join("1" * 12) + "\n")
    with pytest.raises(ReadLimitError, match=r"12 columns, more than the limit of 10 .*--max-col"):
        read_table(path, limits=ReadLimits(max_columns=10))
    assert DEFAULT_LIMITS.max_columns == 10_000


def test_too_many_cells_stop_a_csv_before_typing(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("a,b\n" + "1,2\n" * 100)
    with pytest.raises(ReadLimitError, match=r"100 rows × 2 columns = 200 cells, .*--max-cells"):
        read_table(path, limits=ReadLimits(max_cells=150))


@pytest.mark.parametrize("as_directory", [False, True])
def test_parquet_limits_come_from_the_metadata(tmp_path, as_directory):
    frame = pl.DataFrame({f"c{i}": range(100) for i in range(5)})
    path = tmp_path / ("data" if as_directory else "data.parquet")
    if as_directory:
        path.mkdir()
        frame.write_parquet(path / "part-0.parquet")
        frame.write_parquet(path / "part-1.parquet")
    else:
        frame.write_parquet(path)
    cells = 1000 if as_directory else 500
    with pytest.raises(ReadLimitError, match=f"= {cells:,} cells, more than the limit of 400"):
        read_table(path, limits=ReadLimits(max_cells=400))
    with pytest.raises(ReadLimitError, match=r"5 columns, more than the limit of 4"):
        read_table(path, limits=ReadLimits(max_columns=4))


def test_the_class_limit_names_its_flag():
    with pytest.raises(ReadLimitError, match=r"50,000 distinct classes, .*--max-classes"):
        DEFAULT_LIMITS.check_classes(50_000, "t.csv")
    DEFAULT_LIMITS.check_classes(10_000, "t.csv")
