"""The data rules of issue 19: ID columns, missing values, missing labels, mixed columns, and
predict's one output row per input row — each on a table generated here."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch

from softclass.data import Recipe, TypingOptions, read_table
from softclass.data.typing_table import id_like_reason
from softclass.errors import DataError


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


# --- mixed columns --------------------------------------------------------------------------


def _mixed_table(n_rows: int = 60) -> pl.DataFrame:
    rng = np.random.default_rng(5)
    grade = ["K", *(str(value) for value in range(1, 13))]
    income = [f"{value:.2f}" for value in rng.normal(50, 10, size=n_rows)]
    income[3] = "unknown"
    income[17] = "refused"
    return pl.DataFrame(
        {
            "grade": [grade[index % 13] for index in range(n_rows)],
            "income": income,
            "kind": ["a", "b", "c"] * (n_rows // 3),
        }
    )


def test_few_distinct_values_mixing_numbers_and_words_are_categories():
    recipe = Recipe.fit(_mixed_table(), "kind")
    grade = recipe.column_type("grade")
    assert grade.kind == "text"
    assert "mixes numbers and words ('K'): read as text, 13 categories" in grade.note
    assert any(note.startswith("column 'grade': mixes numbers") for note in recipe.notes)


def test_mostly_numbers_with_a_few_words_are_numbers_and_the_words_missing():
    table = _mixed_table()
    recipe = Recipe.fit(table, "kind")
    income = recipe.column_type("income")
    assert income.kind == "number" and income.words_as_missing
    assert income.note == "2 cell(s) with words ('refused', 'unknown') read as missing"
    assert "income.missing" in recipe.feature_names
    features = recipe.transform(pl.DataFrame({"grade": ["K"], "income": ["no idea"]}))
    indicator = recipe.feature_names.index("income.missing")
    assert features[0, indicator] > 0  # the word is a missing value: indicator on


@pytest.mark.parametrize(
    ("option", "column", "kind"),
    [("categorical", "income", "text"), ("numeric", "grade", "number")],
)
def test_categorical_and_numeric_override_the_rule(option, column, kind):
    recipe = Recipe.fit(_mixed_table(), "kind", typing=TypingOptions(**{option: (column,)}))
    assert recipe.column_type(column).kind == kind
    assert f"--{option}" in recipe.column_type(column).note


def test_override_of_an_unknown_column_and_of_both_kinds_is_refused():
    with pytest.raises(DataError, match=r"--numeric 'grades': no such column \(did you mean"):
        Recipe.fit(_mixed_table(), "kind", typing=TypingOptions(numeric=("grades",)))
    with pytest.raises(DataError, match=r"--categorical and --numeric both name 'grade'"):
        TypingOptions(categorical=("grade",), numeric=("grade",))


@pytest.mark.parametrize("labels", [["1", "2-10"], ["1999", "2000", "K"]])
def test_any_distinct_target_value_is_a_class(labels):
    n_rows = 30 * len(labels)
    table = pl.DataFrame(
        {
            "x": np.arange(n_rows, dtype=float) % 7,
            "y": [labels[i % len(labels)] for i in range(n_rows)],
        }
    )
    assert Recipe.fit(table).classes == tuple(sorted(labels))


def test_a_mixed_target_with_many_numbers_keeps_every_value_as_a_class():
    labels = [str(value) for value in range(30)] + ["K"]
    table = pl.DataFrame({"x": np.arange(31 * 4, dtype=float), "y": labels * 4})
    recipe = Recipe.fit(table, keep=["x"])
    assert len(recipe.classes) == 31 and "K" in recipe.classes
