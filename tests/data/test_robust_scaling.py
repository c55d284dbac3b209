"""Normalization "robust": median / interquartile range, then smooth clipping (issue 19 part 2)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from softclass.data import Recipe
from softclass.data.features import SMOOTH_CLIP
from softclass.errors import ModelFileError


def table_with_outlier() -> pl.DataFrame:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 1000.0]
    return pl.DataFrame({"x": values, "flag": [0.0] * 8 + [1.0], "y": list("ababababa")})


def test_robust_scales_by_median_and_interquartile_range_then_clips_smoothly():
    table = table_with_outlier()
    recipe = Recipe.fit(table, normalization="robust")
    feature = recipe.features[0]
    values = table["x"].to_numpy()
    quartiles = np.quantile(values, [0.25, 0.75])
    assert feature.offset == pytest.approx(np.median(values))
    assert feature.scale == pytest.approx(quartiles[1] - quartiles[0])
    assert feature.clip == SMOOTH_CLIP
    scaled = (values - np.median(values)) / (quartiles[1] - quartiles[0])
    expected = scaled / np.sqrt(1 + (scaled / SMOOTH_CLIP) ** 2)
    encoded = recipe.transform(table)[:, 0]
    torch.testing.assert_close(encoded, torch.tensor(expected, dtype=torch.float32))
    # the outlier ends just below the bound, the others keep their spacing near 0
    assert SMOOTH_CLIP * 0.99 < encoded[-1] < SMOOTH_CLIP
    assert float(encoded[4]) == 0.0


def test_robust_uses_half_the_range_when_the_quartiles_meet():
    recipe = Recipe.fit(table_with_outlier(), normalization="robust")
    flag = recipe.features[1]
    assert flag.offset == 0.0 and flag.scale == pytest.approx(0.5)


def test_robust_constant_column_becomes_zeros():
    table = pl.DataFrame({"constant": [7.0, 7.0, 7.0], "y": ["a", "b", "a"]})
    recipe = Recipe.fit(table, normalization="robust")
    assert recipe.features[0].scale == 1.0
    assert recipe.transform(table).tolist() == [[0.0], [0.0], [0.0]]


def test_the_clip_is_saved_and_a_recipe_without_it_does_not_clip(tmp_path):
    table = table_with_outlier()
    recipe = Recipe.fit(table, normalization="robust")
    loaded = Recipe.load(recipe.save(tmp_path / "recipe.json"))
    assert loaded == recipe
    torch.testing.assert_close(loaded.transform(table), recipe.transform(table))
    zscored = Recipe.fit(table).to_dict()
    assert all("clip" not in feature for feature in zscored["features"])
    assert Recipe.from_dict(zscored).features[0].clip is None


def test_a_non_positive_clip_in_a_recipe_file_is_refused():
    data = Recipe.fit(table_with_outlier(), normalization="robust").to_dict()
    data["features"][0]["clip"] = 0
    with pytest.raises(ModelFileError, match=r"field 'features\[0\]\.clip' should be a positive"):
        Recipe.from_dict(data)
