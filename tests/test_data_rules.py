"""The data rules of issue 19: ID columns, missing values, missing labels, mixed columns, and
predict's one output row per input row — each on a table generated here."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch

from softclass.data import Recipe, read_table
from softclass.data.typing_table import id_like_reason


def _roles(recipe: Recipe) -> dict[str, str]:
    return {info.name: info.role for info in recipe.columns}


def _actions(recipe: Recipe) -> dict[str, str]:
    return {info.name: info.action for info in recipe.columns}


def _classes_table(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Sorted by class, as many published tables are: row numbers predict the class."""
    rng = np.random.default_rng(seed)
    size = rng.normal(size=n_rows)
    kind = np.where(np.arange(n_rows) < n_rows // 2, "a", "b")
    return pd.DataFrame({"size": size + (kind == "b"), "kind": kind})


def test_pandas_index_column_is_named_and_dropped(tmp_path):
    path = tmp_path / "exported.csv"
    _classes_table(60).to_csv(path)  # the index is written with an empty header cell
    table = read_table(path, raw=True)
    assert table.columns[0] == "Unnamed: 0"
    recipe = Recipe.fit(table, "kind")
    assert _roles(recipe)["Unnamed: 0"] == "dropped"
    assert "by its name" in _actions(recipe)["Unnamed: 0"]
    assert recipe.source_columns == ("size",)


@pytest.mark.parametrize("name", ["rownames", "seqno", "idno", "patnr", "subject_id", "BirdID"])
def test_id_named_column_dropped_even_in_a_small_table(name):
    table = pl.DataFrame(
        {name: [3, 1, 2, 5, 4, 7], "size": [1.0, 2, 3, 4, 5, 6], "kind": ["a", "b"] * 3}
    )
    recipe = Recipe.fit(table, "kind")
    assert _roles(recipe)[name] == "dropped"
    assert any(name in note and "--keep" in note for note in recipe.notes)


def test_row_numbers_found_after_a_shuffle_and_a_split():
    frame = _classes_table(200).reset_index(names="order")  # 0..199, sorted by class
    shuffled = frame.sample(frac=1.0, random_state=1).head(130)  # a 65 % sample, any order
    recipe = Recipe.fit(pl.from_pandas(shuffled), "kind")
    assert _roles(recipe)["order"] == "dropped"
    assert "distinct whole numbers" in _actions(recipe)["order"]
    kept = Recipe.fit(pl.from_pandas(shuffled), "kind", keep=["order"])
    assert _roles(kept)["order"] == "feature"


def test_whole_number_feature_with_a_wide_range_is_kept():
    rng = np.random.default_rng(3)
    counts = pl.Series("count", rng.choice(100_000, size=200, replace=False))
    assert (
        id_like_reason(
            counts,
            Recipe.fit(
                pl.DataFrame({"count": counts, "kind": ["a", "b"] * 100}), "kind"
            ).column_type("count"),
        )
        is None
    )


def test_text_unique_per_row_dropped():
    names = [f"person {index}" for index in range(40)]
    table = pl.DataFrame({"name": names, "size": np.arange(40.0) % 7, "kind": ["a", "b"] * 20})
    recipe = Recipe.fit(table, "kind")
    assert _roles(recipe)["name"] == "dropped"


# A recipe written by softclass before version 3 (missing "impute" filled the mean and the most
# frequent category, without indicators): it must still load and transform the same.
VERSION_2_RECIPE = {
    "format": "softclass-recipe",
    "version": 2,
    "target": "y",
    "classes": ["a", "b"],
    "class_counts": [3, 2],
    "normalization": "zscore",
    "missing": "impute",
    "n_rows": 5,
    "features": [
        {
            "name": "age",
            "kind": "numeric",
            "offset": 37.5,
            "scale": 14.79019945774904,
            "fill_value": 37.5,
            "mean": 37.5,
            "std": 14.79019945774904,
            "minimum": 20.0,
            "maximum": 60.0,
        },
        {
            "name": "color",
            "kind": "categorical",
            "categories": ["blue", "red"],
            "counts": [2, 2],
            "fill_value": "blue",
        },
    ],
    "columns": [],
    "id_columns": [],
    "missing_markers": ["", "NA", "N/A", "null", "NULL", "?"],
}
VERSION_2_FEATURES = [
    [-1.1832159757614136, 0.0, 1.0],
    [0.0, 1.0, 0.0],
    [0.16903084516525269, 1.0, 0.0],
    [1.521277666091919, 0.0, 1.0],
    [-0.5070925354957581, 1.0, 0.0],
]


def test_recipe_of_version_2_loads_and_transforms_as_before(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(VERSION_2_RECIPE))
    recipe = Recipe.load(path)
    table = pl.DataFrame(
        {
            "age": [20.0, None, 40.0, 60.0, 30.0],
            "color": ["red", "blue", None, "red", "blue"],
            "y": ["a", "b", "a", "b", "a"],
        }
    )
    assert recipe.features[0].fill_value == 37.5  # the mean, as version 2 imputed
    torch.testing.assert_close(recipe.transform(table), torch.tensor(VERSION_2_FEATURES))
