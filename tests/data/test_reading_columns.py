"""Reading a CSV raw: the text cells come through the column-at-a-time conversion unchanged."""

from pathlib import Path

import polars as pl

from softclass.data import read_table
from softclass.data.sources import read_csv


def test_raw_csv_cells_match_arrows_table_column_for_column(tmp_path: Path):
    rows = ["id,name,price,when", '1, é ,"$1,000.50",2021-01-01', '2,,"$3",', "3,x y,4,2021-02-03"]
    path = tmp_path / "cells.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    table = read_table(path, raw=True)
    assert table.columns == ["id", "name", "price", "when"]
    assert table.dtypes == [pl.String] * 4
    assert table.equals(pl.from_arrow(read_csv(path, None, None)))
    assert table.get_column("price").to_list() == ["$1,000.50", "$3", "4"]
    assert table.get_column("name").to_list()[0] == " é "
