"""Quantile bins of numbers: the piecewise-linear encoding (issue 19 part 2, ``--bins``)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from softclass.data import Recipe
from softclass.data.features import _ranked, fit_numeric, sorted_quantiles
from softclass.errors import ConfigError, ModelFileError


def table() -> pl.DataFrame:
    values = [0.5 * index for index in range(12)]
    return pl.DataFrame(
        {
            "x": values,
            "flag": [0.0, 1.0] * 6,
            "missing": [None, 1.0, 2.0, 3.0] * 3,
            "y": list("ab") * 6,
        }
    )


def test_each_number_gets_one_output_per_quantile_bin():
    recipe = Recipe.fit(table(), normalization="robust", bins=4)
    x = recipe.features[0]
    expected = np.unique(np.quantile(table()["x"].to_numpy(), [0, 0.25, 0.5, 0.75, 1]))
    np.testing.assert_allclose(x.edges, expected)
    assert recipe.feature_names[:5] == ("x", "x#bin1", "x#bin2", "x#bin3", "x#bin4")
    encoded = recipe.transform(table())
    values = table()["x"].to_numpy()[:, None]
    low, high = expected[:-1], expected[1:]
    piecewise = np.clip((values - low) / (high - low), 0, 1)
    torch.testing.assert_close(encoded[:, 1:5], torch.tensor(piecewise, dtype=torch.float32))


def test_a_zero_one_column_and_a_missing_indicator_get_no_bins():
    recipe = Recipe.fit(table(), bins=4)
    by_name = {feature.name: feature for feature in recipe.features}
    assert by_name["flag"].edges == () and by_name["missing.missing"].edges == ()
    assert len(by_name["missing"].edges) >= 3  # three distinct values: bins between them
    assert "x scaled (zscore) + 4 bins" in [
        f"{row['name']} {row['action']}" for row in recipe.typing_table()
    ]


def test_no_bins_by_default_and_bins_survive_save_and_load(tmp_path):
    assert all(feature.edges == () for feature in Recipe.fit(table()).features[:2])
    recipe = Recipe.fit(table(), bins=3)
    loaded = Recipe.load(recipe.save(tmp_path / "recipe.json"))
    assert loaded == recipe
    torch.testing.assert_close(loaded.transform(table()), recipe.transform(table()))


@pytest.mark.parametrize("bins", [-1, 257, 2.5, True])
def test_bins_out_of_range_are_refused(bins):
    with pytest.raises(ConfigError, match=r"--bins .* is not allowed; expected a whole number"):
        Recipe.fit(table(), bins=bins)


@pytest.mark.parametrize("edges", [[1.0, 0.0, 2.0], [0.0, 1.0], "0,1,2", [0.0, float("nan"), 2.0]])
def test_damaged_edges_in_a_recipe_file_are_refused(edges):
    data = Recipe.fit(table(), bins=4).to_dict()
    data["features"][0]["edges"] = edges
    with pytest.raises(ModelFileError, match=r"'features\[0\]\.edges' should be 3 or more"):
        Recipe.from_dict(data)


@pytest.mark.parametrize("zeros", ["plain", "both signs", "both signs, away", "both, lowest"])
def test_median_quartiles_and_edges_are_the_bits_of_each_statistic_taken_apart(zeros):
    # fit_numeric sorts the present values once for all of them (features._ranked); each must
    # be the bits polars' median and quantile and numpy's quantile give on the column as read,
    # also when a sort could reorder 0.0 and -0.0: sorted only where no statistic reads a zero
    generator = np.random.default_rng(3)
    values = np.round(generator.normal(0.0, 0.002, 2001), 3)
    if zeros == "plain":
        values[values == 0] = 0.0
    elif zeros == "both signs, away":  # the zeros between the 0.125 and 0.25 quantiles
        values = np.round(generator.normal(5.0, 3.0, 2001), 3) + 0.0
        values[values == 0] = 1.0
        values[[10, 20, 30, 40]] = [0.0, -0.0, 0.0, -0.0]
    elif zeros == "both, lowest":  # the lowest values are zeros: the fallback
        values = np.abs(values)
        values[np.flatnonzero(values == 0)[::2]] = -0.0
    assert (zeros == "plain") != bool(np.signbit(values[values == 0]).any())
    assert zeros == "plain" or not np.signbit(values[values == 0]).all()
    column = pl.Series("x", values).scatter([5, 70, 900], None)
    assert (_ranked(column, 8) is column) == (zeros in ("both signs", "both, lowest"))
    feature = fit_numeric(column, "robust", {}, "impute", ("x", None), bins=8)
    present = column.drop_nulls()
    quartiles = float(present.quantile(0.75, "linear")) - float(present.quantile(0.25, "linear"))
    edges = np.unique(np.quantile(present.to_numpy(), np.linspace(0.0, 1.0, 9)))

    def bits(numbers):
        return np.asarray(numbers, dtype=np.float64).view(np.int64).tolist()

    assert bits([feature.offset, feature.fill_value]) == bits([column.median()] * 2)
    assert bits(feature.scale) == bits(quartiles)
    assert bits(feature.edges) == bits(edges) and len(edges) >= 3


def _arrays_to_rank():
    generator = np.random.default_rng(7)
    yield from ([1.5], [-0.0], [0.0], [2.0, 1.0], [-0.0, -0.0, 3.0], [0.0, 0.0, 1e-300])
    yield [-1e308, 1e308, 1e308]  # a spread beyond float64's range
    yield [1.0, 1.0 + 2**-52, 1.0 + 2**-51]
    for size in (3, 4, 5, 8, 9, 10, 17, 100, 101, 1000, 1001, 4096):
        yield generator.normal(0.0, 1.0, size)
        yield np.round(generator.normal(5.0, 3.0, size), 1) + 0.0  # ties, zeros made 0.0
        yield generator.integers(-3, 4, size).astype(np.float64)  # mostly ties
        yield -np.abs(np.round(generator.normal(0.0, 0.01, size), 2))  # -0.0 among the ties
        yield generator.exponential(1e-5, size) * generator.choice([1e-300, 1.0, 1e300], size)


@pytest.mark.parametrize("case", range(len(list(_arrays_to_rank()))))
def test_quantiles_read_off_the_sorted_values_are_numpys_bits(case):
    values = np.sort(list(_arrays_to_rank())[case])
    if (values == 0).any():  # one sign of zero: a sort leaves equal values the same bits
        assert np.signbit(values[values == 0]).all() or not np.signbit(values[values == 0]).any()
    generator = np.random.default_rng(case)
    for levels in [np.linspace(0.0, 1.0, bins + 1) for bins in (1, 2, 3, 4, 7, 8, 16, 255)] + [
        np.array([0.25, 0.5, 0.75]),
        generator.random(50),
        np.array([0.5 - 2**-53, 0.5, 0.5 + 2**-53, 1 / 3, 2 / 3, 0.1, 0.9]),
    ]:
        expected = np.quantile(values, levels)
        found = sorted_quantiles(values, levels)
        assert found.view(np.int64).tolist() == expected.view(np.int64).tolist(), levels
