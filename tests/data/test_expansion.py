"""Bins made where the rows are used (data/expansion.py): the same numbers as the dense matrix,
the same training on every backend, the same trained model from ``softclass train``."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
import torch

import softclass.data.expansion as expansion_module
from softclass.data.expansion import (
    FeatureRows,
    InputExpansion,
    as_dense,
    compact_features,
    in_blocks,
    row_blocks,
    take_rows,
)
from softclass.data.features import NumericFeature, encoded_rows
from softclass.data.prepare import prepare_table
from softclass.errors import ConfigError
from softclass.jobs.compare import compare
from softclass.jobs.store import load_model
from softclass.jobs.stream_train import prepare_streamed
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLPConfig
from softclass.training import mlp_native
from softclass.training.backends.compiled import BLAS_MIN_WORK
from softclass.training.config import TrainConfig
from softclass.training.distributed import DistContext
from softclass.training.engine import train_model
from softclass.training.ensemble import design_seed_grid, train_ensemble
from softclass.training.streamed import StreamedTrainer


def _table(n_rows: int = 1200, seed: int = 0) -> pl.DataFrame:
    generator = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "wide": generator.normal(size=n_rows) * 1e3,
            "steps": generator.integers(-20, 30, n_rows).astype(float),
            "colour": generator.choice(["red", "green", "blue"], n_rows),
            "gappy": [
                None if i % 7 == 0 else float(v) for i, v in enumerate(generator.random(n_rows))
            ],
            "flag": generator.integers(0, 2, n_rows).astype(float),
            "label": generator.choice(["p", "q", "r"], n_rows),
        }
    )


def _dense_path(monkeypatch) -> None:
    """Prepare as before the expansion: the bins written into the matrices."""
    monkeypatch.setattr(InputExpansion, "of", classmethod(lambda cls, features: None))


@pytest.fixture(scope="module")
def both():
    """(compact, dense) preparations of one table: robust scaling, 8 bins, 20 % validation."""
    table = _table()
    compact = prepare_table(table, "label", normalization="robust", bins=8)
    with pytest.MonkeyPatch.context() as patch:
        _dense_path(patch)
        dense = prepare_table(table, "label", normalization="robust", bins=8)
    return compact, dense


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.int32 if tensor.dtype == torch.float32 else torch.int64)


def test_expanded_rows_are_bit_identical_to_the_dense_matrix(both):
    compact, dense = both
    assert isinstance(compact.train_features, FeatureRows)
    assert isinstance(dense.train_features, torch.Tensor)
    lazy = compact.train_features
    assert lazy.shape == dense.train_features.shape and len(lazy) == dense.train_features.shape[0]
    assert lazy.nbytes < dense.train_features.nbytes / 2
    assert torch.equal(_bits(lazy.dense()), _bits(dense.train_features))
    assert torch.equal(
        _bits(as_dense(compact.validation_features)), _bits(dense.validation_features)
    )
    order = torch.randperm(len(lazy), generator=torch.Generator().manual_seed(1))[:50]
    assert torch.equal(_bits(lazy[order]), _bits(dense.train_features[order]))
    assert torch.equal(_bits(take_rows(lazy, order)[5:9]), _bits(dense.train_features[order][5:9]))
    assert torch.equal(lazy.dense(torch.float64), dense.train_features.double())


@pytest.mark.parametrize("clip", [None, 3.0, 1e-3])
def test_a_bin_of_minus_zero_keeps_its_sign_as_the_dense_encoder(clip):
    feature = NumericFeature(
        "x", 0.0, 1.0, None, 0.0, 1.0, -1.0, 2.0, clip=clip, edges=(-1.0, 0.0, 1.0, 2.0)
    )
    values = np.array([-0.0, 0.0, -0.5, 0.5, 1.5, 3.0, -2.0, 1e-300, -1e300, 1e300])
    with np.errstate(over="ignore"):  # 1e300 / 1e-3 squared: inf, the clipped value 0
        dense = encoded_rows([(feature, values)], len(values), 4)
    spec = InputExpansion.of([feature])
    assert compact_features([feature]) == () and spec.n_compact == 0  # all made from the value
    compact = torch.empty((len(values), 0))
    expanded = spec.expand(compact, torch.from_numpy(values[:, None].copy()))
    assert torch.signbit(dense[0, 0]) and torch.signbit(dense[0, 2])
    assert torch.equal(_bits(expanded), _bits(dense))


def test_the_expansion_lists_each_input_source_in_the_recipes_order(both):
    compact, dense = both
    spec = compact.train_features.expansion
    names = compact.recipe.feature_names
    assert spec.n_inputs == len(names) == dense.train_features.shape[1]
    # a binned number's scaled value and bins are made from its binned value
    made = [name for name in names if name.split("#")[0] in ("wide", "steps", "gappy")]
    assert len(made) == 3 + sum("#bin" in name for name in names)
    assert [names[j] for j in np.flatnonzero(spec.sources < 0)] == made
    assert spec.n_compact == len(names) - len(made) == compact.train_features.compact.shape[1]
    assert spec.n_raw == compact.train_features.raw.shape[1] == 3  # wide, steps, gappy (not 0/1)
    first = [index for index, name in enumerate(names) if name.split("#")[0] == "wide"]
    assert (spec.sources[first] == -1).all()
    assert (spec.bound[first] == [3.0] + [0.0] * (len(first) - 1)).all()  # robust's clip, bins


def _every_kind(n_rows: int = 900) -> pl.DataFrame:
    """A number of each shape (with missing cells, integer, constant, 0/1, -0.0 and huge
    values), a boolean, a date, categories (with missing cells, and more than 64 levels)."""
    generator = np.random.default_rng(7)
    spread = generator.standard_cauchy(n_rows) * 1e5
    spread[::50] = -0.0
    spread[1::97] = 3e38
    return pl.DataFrame(
        {
            "spread": spread,
            "gappy": [
                None if i % 9 == 0 else float(v) for i, v in enumerate(generator.random(n_rows))
            ],
            "count": generator.integers(-5, 500, n_rows),
            "constant": np.full(n_rows, 2.5),
            "binary": generator.integers(0, 2, n_rows).astype(float),
            "switch": generator.random(n_rows) < 0.3,
            "day": np.datetime64("2020-01-01") + generator.integers(0, 900, n_rows),
            "colour": [
                None if i % 11 == 0 else colour
                for i, colour in enumerate(generator.choice(["a", "b", "c"], n_rows))
            ],
            "city": [f"c{v}" for v in generator.integers(0, 90, n_rows)],
            "label": generator.choice(["p", "q", "r"], n_rows),
        }
    )


@pytest.mark.parametrize("normalization", ["robust", "zscore", "minmax"])
def test_every_column_kind_expands_to_the_dense_matrix_in_python_and_the_compiled_loops(
    normalization,
):
    table = _every_kind()
    compact = prepare_table(table, "label", normalization=normalization, bins=8)
    with pytest.MonkeyPatch.context() as patch:
        _dense_path(patch)
        dense = prepare_table(table, "label", normalization=normalization, bins=8)
    spec = compact.train_features.expansion
    assert spec.n_raw >= 4 and spec.n_compact == compact.train_features.compact.shape[1]
    assert ((spec.bound == math.inf).sum() == spec.n_raw) == (normalization != "robust")
    for mine, reference in [
        (compact.train_features, dense.train_features),
        (compact.validation_features, dense.validation_features),
    ]:
        assert torch.equal(_bits(mine.dense()), _bits(reference))
        assert torch.equal(mine.dense(torch.float64), reference.double())
    results = [  # the compiled row loops expand each row as they gather it
        train_ensemble(
            _network(data.n_features, (8,)),
            design_seed_grid(["A"], [0]),
            data.train_features,
            data.train_targets,
            TrainConfig(epochs=1, batch_size=16, backend="compiled", optimizer="adam"),
            data.validation_features,
            data.validation_targets,
        )
        for data in (compact, dense)
    ]
    for mine, reference in zip(
        results[0].network.parameters(), results[1].network.parameters(), strict=True
    ):
        assert torch.equal(_bits(mine), _bits(reference))
    assert np.array_equal(results[0].val_loss, results[1].val_loss)


def test_without_bins_the_features_stay_a_tensor():
    prepared = prepare_table(_table(200), "label", normalization="robust", bins=0)
    assert isinstance(prepared.train_features, torch.Tensor)
    assert InputExpansion.of(prepared.recipe.features) is None


def test_in_blocks_runs_a_model_a_block_at_a_time(both, monkeypatch):
    compact, dense = both
    monkeypatch.setattr(expansion_module, "_EXPAND_BLOCK_VALUES", 64 * compact.n_features)
    model = torch.nn.Linear(compact.n_features, 3)
    with torch.no_grad():
        blocks = in_blocks(model, compact.train_features)
        expected = torch.cat([model(dense.train_features[s : s + 64]) for s in range(0, 960, 64)])
    assert blocks.shape == (960, 3) and torch.equal(blocks, expected)
    assert in_blocks(model, dense.train_features).shape == (960, 3)


def _network(features: int, hidden: tuple[int, ...]) -> MLPConfig:
    return MLPConfig(n_features=features, hidden=hidden, n_classes=3, activation="relu")


# (backend, hidden, batch): torch's batched path; the compiled row loops (a step under
# BLAS_MIN_WORK multiply-adds); the compiled BLAS step (above it)
ENGINE_CASES = [("torch", (16,), 32), ("compiled", (8,), 16), ("compiled", (128, 64), 256)]


@pytest.mark.parametrize(("backend", "hidden", "batch"), ENGINE_CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_the_engine_trains_the_same_bits_from_compact_rows(both, backend, hidden, batch, weighted):
    compact, dense = both
    widths = (compact.n_features, *hidden, 3)
    work = batch * sum(a * b for a, b in itertools.pairwise(widths))
    if backend == "compiled":
        assert mlp_native.library() is not None
        assert (work >= BLAS_MIN_WORK) == (hidden == (128, 64))
        assert hidden != (128, 64) or mlp_native.step_library() is not None
    weights = torch.linspace(0.5, 2.0, len(compact.train_targets)) if weighted else None
    results = []
    for data in (compact, dense):
        results.append(
            train_ensemble(
                _network(data.n_features, hidden),
                design_seed_grid(["A", "C"], [0, 1]),
                data.train_features,
                data.train_targets,
                TrainConfig(epochs=2, batch_size=batch, backend=backend, optimizer="adam"),
                data.validation_features,
                data.validation_targets,
                row_weights=weights,
            )
        )
    assert results[0].backend == backend
    for mine, reference in zip(
        results[0].network.parameters(), results[1].network.parameters(), strict=True
    ):
        assert torch.equal(_bits(mine), _bits(reference))
    for name in ("train_loss", "val_loss", "val_accuracy", "train_accuracy"):
        assert np.array_equal(getattr(results[0], name), getattr(results[1], name)), name


def test_the_engine_trains_in_float64_from_compact_rows(both):
    compact, dense = both
    results = [
        train_ensemble(
            _network(data.n_features, (8,)),
            design_seed_grid(["B"], [3]),
            data.train_features,
            data.train_targets,
            TrainConfig(epochs=1, batch_size=64, backend="compiled"),
            data.validation_features,
            data.validation_targets,
            dtype=torch.float64,
        )
        for data in (compact, dense)
    ]
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            results[0].network.parameters(), results[1].network.parameters(), strict=True
        )
    )


def test_the_autograd_trainer_trains_the_same_bits_from_compact_rows(both):
    compact, dense = both
    models = [
        train_model(
            get_design("D"),
            _network(data.n_features, (16,)),
            TrainConfig(epochs=2, batch_size=50, backend="autograd"),
            data.train_features,
            data.train_targets,
            data.validation_features,
            data.validation_targets,
        )
        for data in (compact, dense)
    ]
    for mine, reference in zip(
        models[0].model.parameters(), models[1].model.parameters(), strict=True
    ):
        assert torch.equal(_bits(mine.detach()), _bits(reference.detach()))
    for name in ("train_loss", "validation_loss", "validation_accuracy"):
        assert models[0].history.column(name) == models[1].history.column(name), name


def test_compact_training_rows_need_compact_validation_rows_in_the_compiled_loops(both):
    compact, dense = both
    with pytest.raises(ConfigError, match="validation rows are Tensor, not compact rows"):
        train_ensemble(
            _network(compact.n_features, (8,)),
            design_seed_grid(["A"], [0]),
            compact.train_features,
            compact.train_targets,
            TrainConfig(epochs=1, batch_size=64, backend="compiled"),
            dense.validation_features,
            dense.validation_targets,
        )


def test_compare_measures_the_same_numbers_from_compact_rows(both):
    compact, dense = both
    config = TrainConfig(epochs=2, batch_size=64)
    results = [compare(data, "AC", config, hidden=(8,)) for data in (compact, dense)]
    numbers = [
        [{k: v for k, v in run.metrics.items() if k != "seconds"} for run in result.runs]
        for result in results
    ]
    assert numbers[0] == numbers[1] and len(numbers[0]) == 2
    assert [a.noise_floor for a in results[0].agreements] == [
        a.noise_floor for a in results[1].agreements
    ]


def test_softclass_train_and_predict_give_the_same_model_from_compact_rows(
    run, tmp_path, monkeypatch
):
    table = tmp_path / "table.csv"
    _table(600, seed=4).write_csv(table)
    outputs = []
    for name in ("compact", "dense"):
        if name == "dense":
            _dense_path(monkeypatch)
        code, _, err = run("train", table, "--out", tmp_path / name, "--epochs", "3")
        assert code == 0, err
        code, out, err = run("predict", tmp_path / name, table)
        assert code == 0, err
        outputs.append((load_model(tmp_path / name), out))
    (compact, compact_out), (dense, dense_out) = outputs
    assert compact.recipe.to_dict() == dense.recipe.to_dict()
    assert any(
        len(feature.edges) > 2 for feature in compact.recipe.features if feature.kind == "numeric"
    )
    state, reference = compact.model.state_dict(), dense.model.state_dict()
    assert all(torch.equal(state[key], reference[key]) for key in reference)
    assert compact_out == dense_out and compact_out.count("\n") > 600


def test_without_validation_rows_the_training_rows_stay_compact(monkeypatch):
    table = _table(300, seed=2)
    compact = prepare_table(table, "label", bins=8, validation_fraction=0)
    _dense_path(monkeypatch)
    dense = prepare_table(table, "label", bins=8, validation_fraction=0)
    assert isinstance(compact.train_features, FeatureRows) and compact.validation_features is None
    assert torch.equal(_bits(compact.train_features.dense()), _bits(dense.train_features))
    assert torch.equal(compact.train_targets, dense.train_targets)


def test_recipe_prepare_keeps_the_rows_compact_when_asked(both):
    recipe = both[0].recipe
    table = _table(100, seed=5)
    prepared = recipe.prepare(table, compact=True)
    assert isinstance(prepared.features, FeatureRows)
    assert torch.equal(_bits(prepared.features.dense()), _bits(recipe.prepare(table).features))
    assert isinstance(recipe.prepare(table, features=False, compact=True).features, torch.Tensor)


def test_row_blocks_cover_the_rows_once(both, monkeypatch):
    compact, dense = both
    assert row_blocks(dense.train_features) == [slice(0, 960)]
    monkeypatch.setattr(expansion_module, "_EXPAND_BLOCK_VALUES", 100 * compact.n_features)
    blocks = row_blocks(compact.train_features)
    assert len(blocks) == 10 and blocks[-1] == slice(900, 960)
    assert torch.equal(_bits(compact.train_features.dense()), _bits(dense.train_features))


def test_streamed_training_reads_compact_chunks_and_trains_the_same_bits(tmp_path, monkeypatch):
    path = tmp_path / "table.parquet"
    _table(1_500, seed=6).write_parquet(path, row_group_size=200)
    results = []
    for name in ("compact", "dense"):
        if name == "dense":
            _dense_path(monkeypatch)
        data = prepare_streamed(
            path,
            memory=64 * 2**20,
            validation_fraction=0.2,
            seed=0,
            distributed=DistContext(),
            target="label",
            options={"bins": 8, "normalization": "robust"},
        )
        try:
            stored = sorted(item.name for item in data.chunks.directory.iterdir())
            assert any(item.endswith(".raw.npy") for item in stored) == (name == "compact")
            features, _ = data.chunks.load(data.chunks.owned[0])
            assert isinstance(features, FeatureRows) == (name == "compact")
            config = TrainConfig(epochs=2, batch_size=32, seed=0)
            model_config = MLPConfig(data.n_features, data.n_classes, (8,), "tanh")
            trainer = StreamedTrainer(
                get_design("A"),
                model_config,
                config,
                data.chunks,
                data.window_chunks,
                data.identity,
            )
            results.append(trainer.fit_stream())
            report = data.report_data()
            assert isinstance(report.train_features, torch.Tensor)
        finally:
            data.close()
    for mine, reference in zip(
        results[0].model.parameters(), results[1].model.parameters(), strict=True
    ):
        assert torch.equal(_bits(mine.detach()), _bits(reference.detach()))
    for name in ("train_loss", "validation_loss"):
        assert results[0].history.column(name) == results[1].history.column(name)
