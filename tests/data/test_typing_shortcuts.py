"""Typing's shortcuts read a column as the full rule does: plain numbers beside missing
markers (one cast), and a text column found in its first cells (no cast of every cell)."""

import polars as pl
import pytest

from softclass.data.column_types import (
    NUMBER,
    TEXT,
    ColumnType,
    TypingOptions,
    present_text,
    read_column,
    type_column,
)
from softclass.data.typing_table import typed_table
from softclass.errors import DataError


@pytest.mark.parametrize(
    ("cells", "values", "note"),
    [
        (
            ["1.5", "NA", "", "-2", "N/A", "?", None, "nan"],
            [1.5, None, None, -2.0, None, None, None],
            "",
        ),
        (
            ["1.234", "NA", "5.678", "", "2.500"],
            [1.234, None, 5.678, None, 2.5],
            "'1.234' is read as 1.234",
        ),
        (["", "1.234", "5.678", "null"], [None, 1.234, 5.678, None], "'1.234' is read as 1.234"),
        ([" NA ", "7", " 5", "NULL"], [None, 7.0, 5.0, None], ""),
        (["NA", "", " "], [None, None, None], ""),
    ],
)
def test_numbers_beside_missing_markers_type_as_their_stripped_cells_do(cells, values, note):
    column = pl.Series("x", cells)
    column_type, typed = type_column(column)
    # the same column with markers already null and blanks stripped takes the slower path
    expected_type, expected = type_column(present_text(column))
    assert column_type == expected_type and column_type.kind == NUMBER
    assert column_type.note == expected_type.note and note in column_type.note
    assert typed.dtype == pl.Float64 and typed.name == "x"
    assert typed.to_list()[: len(values)] == values and typed.equals(expected, check_names=True)
    read, bad = read_column(column, ColumnType("x", NUMBER))
    assert bad is None and read.equals(expected)


def test_a_number_marker_keeps_the_full_rule():
    typed = type_column(
        pl.Series("x", ["1", "-999", "NA"]), options=TypingOptions(na_values=("-999",))
    )
    assert typed[1].to_list() == [1.0, None, None]


@pytest.mark.parametrize(
    ("cells", "kind"),
    [
        (["a", "1.5"] * 200, TEXT),  # a word in the first cells: text at once
        (["1.5"] * 300 + ["a"] * 300, TEXT),  # the word after the first cells
        (["$1,000", "2.5", "€3"] * 100, NUMBER),
        (["１２", "＄5", "3"] * 100, NUMBER),  # '＄5' reads as $5 beside a digit of another script
        (["1,5", "2,25", "NA"] * 100, NUMBER),
    ],
)
def test_a_text_column_is_found_in_its_first_cells_as_in_all_of_them(cells, kind):
    column_type, typed = type_column(pl.Series("x", cells))
    assert column_type.kind == kind
    if kind == NUMBER:
        assert typed.null_count() == cells.count("NA")


def test_columns_typed_side_by_side_raise_the_first_bad_column_in_order():
    bad = ["1.5", "2,5"] * 2000
    table = pl.DataFrame({"z": bad, "ok": ["1"] * 4000, "a": bad, "y": ["a", "b"] * 2000})
    for _ in range(5):
        with pytest.raises(DataError, match=r"column 'z' writes numbers with '\.'"):
            typed_table(table, "y")
    typed, types = typed_table(table.drop("z", "a"), "y")
    assert typed.columns == ["ok", "y"] and [t.kind for t in types] == [NUMBER, TEXT]
