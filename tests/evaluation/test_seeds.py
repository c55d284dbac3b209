"""Designs compared over seeds: intervals per design, paired tests, refused arguments."""

import json
import math

import numpy as np
import pytest
import torch

from softclass.errors import ConfigError
from softclass.evaluation.seeds import compare_seeds, seed_bands
from softclass.mlp.designs import DESIGNS
from softclass.mlp.model import MLPConfig
from softclass.training.config import TrainConfig

SETTINGS = TrainConfig(epochs=4, batch_size=8, learning_rate=0.1, momentum=0.0)


def _table(n_rows=37, n_features=4, n_classes=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n_rows, n_features, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, n_classes, (n_rows,), generator=generator)
    return features, targets


def test_compare_seeds_reports_a_b_identical_and_intervals_for_each_design(training_path):
    features, targets = _table(40, seed=3)
    val_features, val_targets = _table(15, seed=4)
    settings = TrainConfig(epochs=5, batch_size=10, learning_rate=0.1, momentum=0.0)
    comparison = compare_seeds(
        MLPConfig(4, 3),
        features,
        targets,
        val_features,
        val_targets,
        settings,
        seeds=[0, 1, 2, 3],
    )
    # Each design's own loss is never paired across designs (C's is a squared error).
    assert set(comparison.pairs) == {"val_accuracy"}
    pairs = {(pair.a, pair.b): pair for pair in comparison.pairs["val_accuracy"]}
    assert len(pairs) == math.comb(len(DESIGNS), 2)
    identical = pairs[("A", "B")]
    assert identical.verdict == "identical" and identical.metric == "validation accuracy"
    assert identical.mean_difference == 0.0 and identical.p_value == 1.0
    assert np.isfinite(pairs[("A", "C")].p_value)
    assert set(comparison.summary) == {"val_loss", "val_accuracy"}
    interval = comparison.summary["val_accuracy"]["C"]
    final = comparison.history("val_accuracy", "C")[:, -1]
    assert interval.low <= final.mean() <= interval.high
    assert interval.mean == pytest.approx(final.mean())
    bands = comparison.bands("val_loss")
    assert bands["D"]["mean"].shape == (5,)
    assert np.all(bands["D"]["low"] <= bands["D"]["high"])
    json.dumps(comparison.to_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seeds": [1]}, "at least 2 distinct seeds"),
        ({"seeds": [1, 1, 2]}, "at least 2 distinct seeds"),
        ({"designs": ["A", "a"]}, "each design may appear once"),
    ],
)
def test_compare_seeds_refuses_what_it_cannot_compare(kwargs, match):
    features, targets = _table(10)
    arguments = {"settings": SETTINGS, "seeds": [0, 1], **kwargs}
    with pytest.raises(ConfigError, match=match):
        compare_seeds(MLPConfig(4, 3), features, targets, features, targets, **arguments)


class _OneSeedRun:
    """A run with one seed of design A: too few for a band."""

    val_loss = np.ones((1, 3))

    def indices(self, design):
        return [0]


def test_a_band_needs_two_seeds_per_design():
    with pytest.raises(ConfigError, match="bands need at least 2 seeds per design, A has 1"):
        seed_bands(_OneSeedRun(), "val_loss", ["A"])
