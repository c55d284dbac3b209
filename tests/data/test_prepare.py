"""Preparing a table: the split and the recipe fitted on the training rows only."""

import polars as pl
import pytest
import torch

from softclass.data import load_bundled
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
