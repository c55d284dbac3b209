"""predict gives one output row per input row, always (issue 19): a row it cannot predict gets
an empty prediction and a reason; under on_error="error" such rows are an error naming them."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softclass.data import Recipe
from softclass.errors import DataError
from softclass.jobs.predict import predict_table
from softclass.jobs.store import SavedModel
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLP, MLPConfig
from softclass.training.config import TrainConfig


def _saved(recipe: Recipe) -> SavedModel:
    """An untrained network behind ``recipe``: predict's rows do not depend on the weights."""
    torch.manual_seed(0)
    config = MLPConfig(recipe.n_features, recipe.n_classes)
    return SavedModel(
        MLP(config).eval(), get_design("A"), config, recipe, TrainConfig(), {}, "test"
    )


def _table(n_rows: int = 40) -> pl.DataFrame:
    rng = np.random.default_rng(2)
    return pl.DataFrame(
        {
            "size": [f"{value:.2f}" for value in rng.normal(size=n_rows)],
            "color": [["red", "blue", "green"][index % 3] for index in range(n_rows)],
            "kind": [["a", "b"][index % 2] for index in range(n_rows)],
        }
    )


@pytest.mark.parametrize("missing", ["error", "drop", "impute"])
def test_every_input_row_has_an_output_row_whatever_the_missing_policy(missing):
    saved = _saved(Recipe.fit(_table(), "kind", missing=missing))
    new = pl.DataFrame({"size": ["1.5", "", "abc", "0.2"], "color": ["red", "blue", None, "x"]})
    prediction = predict_table(saved, new, on_error="skip")
    assert prediction.table["row"].to_list() == [2, 3, 4, 5]
    has_prediction = prediction.table["predicted"].is_not_null().to_list()
    expected = {"error": [True, False, False, True], "drop": [True, False, False, True]}
    assert has_prediction == expected.get(missing, [True, True, False, True])
    reasons = dict(prediction.skipped)
    assert reasons[2] == "column 'size': 'abc' is not a number"
    assert prediction.table["reason"].to_list()[2] == reasons[2]
    probabilities = prediction.table.select(saved.classes)
    assert probabilities.null_count().row(0) == (len(reasons), len(reasons))


def test_rows_without_a_prediction_are_an_error_under_on_error_error():
    saved = _saved(Recipe.fit(_table(), "kind"))
    new = pl.DataFrame({"size": ["1.5", "abc"], "color": ["red", "blue"]})
    with pytest.raises(DataError, match=r"1 of 2 row\(s\) of new\.csv have no prediction: row 3"):
        predict_table(saved, new, source="new.csv")


def test_a_table_of_rows_none_of_which_can_be_predicted_still_gives_every_row():
    saved = _saved(Recipe.fit(_table(), "kind"))
    new = pl.DataFrame({"size": ["abc", "def"], "color": ["red", "blue"]})
    prediction = predict_table(saved, new, on_error="skip")
    assert prediction.table.height == 2 and prediction.table["predicted"].null_count() == 2


_CELLS = st.sampled_from(["", "NA", "1", "-2.5", "1e3", "abc", "red", "blue", " ", "?", "3,5"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    training=st.lists(st.tuples(_CELLS, _CELLS, st.sampled_from(["a", "b", "", "7"])), min_size=4),
    rows=st.lists(st.tuples(_CELLS, _CELLS, _CELLS), max_size=12),
    missing=st.sampled_from(["error", "drop", "impute"]),
)
def test_predict_returns_one_row_per_input_row_for_any_table_that_trains(training, rows, missing):
    columns = ["x", "z", "y"]
    train_table = pl.DataFrame(training, schema=columns, orient="row")
    try:
        recipe = Recipe.fit(train_table, "y", missing=missing)
    except DataError:
        return  # only tables that train are in the property
    new = pl.DataFrame(rows, schema=columns, orient="row")
    prediction = predict_table(_saved(recipe), new, on_error="skip")
    assert prediction.table.height == new.height
    assert prediction.table["row"].to_list() == list(range(2, new.height + 2))
    n_without = prediction.table["predicted"].null_count()
    assert n_without == len(prediction.skipped)
