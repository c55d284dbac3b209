"""Preparing a table: the split and the recipe fitted on the training rows only."""

import numpy as np
import polars as pl
import pytest
import torch

from softclass.data import Recipe, load_bundled
from softclass.data.features import NumericFeature, encoded_rows
from softclass.data.prepare import prepare_table
from softclass.errors import DataError


@pytest.fixture(scope="module")
def iris():
    return prepare_table(load_bundled("iris"), seed=0)


def test_prepare_table_fits_the_recipe_on_training_rows_only(iris):
    assert iris.train_features.shape == (120, 4) and iris.validation_features.shape == (30, 4)
    assert iris.recipe.n_rows == 120
    torch.testing.assert_close(iris.train_features.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    assert iris.validation_features.mean(0).abs().max() > 1e-3
    assert torch.bincount(iris.validation_targets).tolist() == [10, 10, 10]
    assert iris.class_names == ("setosa", "versicolor", "virginica")


def test_prepare_table_without_validation_and_with_too_few_rows():
    whole = prepare_table(load_bundled("iris"), validation_fraction=0)
    assert whole.validation_features is None and whole.train_features.shape == (150, 4)
    tiny = pl.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]})
    with pytest.raises(DataError, match="no validation rows: the table has 2 rows"):
        prepare_table(tiny)


def _mixed_table(n_rows: int = 400) -> pl.DataFrame:
    """Numbers (some missing), a category (some missing), a date and a 3-class label, as text."""
    generator = np.random.default_rng(1)
    numbers = generator.normal(0, 3, n_rows).round(2).astype(str).tolist()
    numbers = [None if index % 17 == 0 else cell for index, cell in enumerate(numbers)]
    colours = [["red", "green", "blue", None][index % 4] for index in range(n_rows)]
    days = [f"2021-0{1 + index % 9}-1{index % 10}" for index in range(n_rows)]
    return pl.DataFrame(
        {
            "x": numbers,
            "z": generator.integers(0, 50, n_rows).astype(str).tolist(),
            "colour": colours,
            "day": days,
            "label": [["a", "b", "c"][index % 3] for index in range(n_rows)],
        }
    )


def test_prepare_table_with_validation_fits_bins_and_scales_on_the_training_rows_alone():
    table = _mixed_table()
    options = {"normalization": "robust", "bins": 8}
    prepared = prepare_table(table, "label", validation_fraction=0.25, **options)
    is_validation = np.zeros(table.height, dtype=bool)
    is_validation[prepared.validation_rows.numpy()] = True
    train_table = table.filter(pl.Series(~is_validation))
    alone = Recipe.fit(train_table, "label", **options)
    assert prepared.recipe.features == alone.features
    assert any(len(feature.edges) > 2 for feature in alone.features if feature.kind == "numeric")
    assert torch.equal(prepared.train_features, alone.transform(train_table))
    validation_table = table.filter(pl.Series(is_validation))
    assert torch.equal(prepared.validation_features, alone.transform(validation_table))
    assert torch.equal(prepared.train_targets, alone.encode_targets(train_table))


def test_prepare_without_features_gives_the_rows_and_targets_of_prepare():
    table = _mixed_table(60).with_columns(
        label=pl.when(pl.int_range(60) == 7).then(None).otherwise(pl.col("label"))
    )
    recipe = Recipe.fit(table, "label", missing="drop")
    full = recipe.prepare(table)
    rows_only = recipe.prepare(table, features=False)
    assert rows_only.features.shape == (full.features.shape[0], 0)
    assert full.features.shape[0] < 60
    assert torch.equal(rows_only.rows, full.rows)
    assert torch.equal(rows_only.targets, full.targets)
    assert rows_only.warnings == full.warnings


def test_encoded_bins_are_piecewise_linear_between_the_edges():
    feature = NumericFeature("x", 0.0, 1.0, None, 0.0, 1.0, 0.0, 4.0, edges=(0.0, 1.0, 4.0))
    values = np.array([-1.0, 0.5, 1.0, 2.5, 9.0])
    matrix = encoded_rows([(feature, values)], len(values), 3)
    expected = [[-1, 0, 0], [0.5, 0.5, 0], [1, 1, 0], [2.5, 1, 0.5], [9, 1, 1]]
    assert torch.equal(matrix, torch.tensor(expected, dtype=torch.float32))
