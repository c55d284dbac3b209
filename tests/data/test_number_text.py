"""Decorated numbers read a slice of rows at a time give what one pass gives."""

import numpy as np
import polars as pl
import pytest

import softclass.data.number_text as number_text
from softclass.data.column_types import NUMBER, type_column
from softclass.errors import DataError


def _money(n_rows: int, plain_every: int | None) -> pl.Series:
    """``$1,234.56``-like cells, some ``12%``, some missing, every ``plain_every``-th plain."""
    generator = np.random.default_rng(4)
    cents = generator.integers(0, 10_000_000, n_rows)
    cells = []
    for index, cent in enumerate(cents.tolist()):
        if index % 13 == 0:
            cells.append(None)
        elif plain_every and index % plain_every == 0:
            cells.append(f"{cent / 100}")
        elif index % 7 == 0:
            cells.append(f"{cent % 1000}.5%")
        else:
            cells.append(f"${cent // 100:,}.{cent % 100:02d}")
    return pl.Series("money", cells, dtype=pl.String)


@pytest.mark.parametrize("plain_every", [None, 5])
def test_decorated_numbers_read_in_slices_equal_one_pass(monkeypatch, plain_every):
    column = _money(5000, plain_every)
    monkeypatch.setattr(number_text, "SLICE", 1 << 30)
    whole_type, whole = type_column(column)
    monkeypatch.setattr(number_text, "SLICE", 333)  # 16 slices, the last one short
    sliced_type, sliced = type_column(column)
    assert whole_type == sliced_type and whole_type.kind == NUMBER
    assert whole.dtype == pl.Float64 and whole.name == sliced.name == "money"
    assert sliced.n_chunks() == 1 and whole.null_count() == column.null_count()
    assert np.array_equal(whole.to_numpy().view(np.int64), sliced.to_numpy().view(np.int64))
    expected = [
        None
        if cell is None
        else float(cell[:-1]) * 0.01
        if cell.endswith("%")
        else float(cell.replace("$", "").replace(",", ""))
        for cell in column.to_list()
    ]
    assert whole.to_list() == expected


def _typed_or_error(column: pl.Series):
    try:
        return type_column(column)
    except DataError as error:
        return str(error)


@pytest.mark.parametrize("bad", ["$12,34x", "$12,3456", "12,5"])
def test_a_bad_cell_among_decorated_numbers_reads_alike_in_slices(monkeypatch, bad):
    column = _money(2000, None).scatter([1500], bad)
    monkeypatch.setattr(number_text, "SLICE", 1 << 30)
    whole = _typed_or_error(column)
    monkeypatch.setattr(number_text, "SLICE", 100)
    sliced = _typed_or_error(column)
    if isinstance(whole, str):
        assert sliced == whole and "row 1502" in whole
    else:
        assert whole[0] == sliced[0] and sliced[1].equals(whole[1], check_names=True)


@pytest.mark.parametrize("plain_every", [None, 5])
def test_a_column_of_several_chunks_is_typed_into_one_chunk(monkeypatch, plain_every):
    # as scatter's result always was: statistics summed per chunk keep their last bits
    column = pl.concat([_money(700, plain_every), _money(800, plain_every)], rechunk=False)
    assert column.n_chunks() == 2
    for size in (1 << 30, 256):
        monkeypatch.setattr(number_text, "SLICE", size)
        typed = type_column(column)[1]
        assert typed.n_chunks() == 1 and typed.len() == 1500
