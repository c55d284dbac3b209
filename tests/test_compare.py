"""The comparison of designs A–D: agreement numbers, measurements, outputs."""

import json
import math
from dataclasses import replace

import matplotlib.image
import polars as pl
import pytest
import torch
from PIL import Image

from softclass.data import load_bundled
from softclass.errors import ConfigError, DataError
from softclass.jobs.compare import PreparedData, compare, parse_designs, prepare_table
from softclass.jobs.store import load_model
from softclass.mlp.designs import get_design
from softclass.training.trainer import TrainConfig, fit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_short_comparison_reports_agreement_and_metrics(iris):
    result = compare(iris, "DCBA", TrainConfig(epochs=4), seeds=2)
    assert result.designs == ("A", "B", "C", "D") and result.seeds == (0, 1)
    pairs = {(a.first, a.second, a.seed): a for a in result.agreements}
    # Several seeds: every model from the batched engine; the lockstep agreement for the first.
    assert set(pairs) == {(x, y, 0) for x, y in (("A", "B"), ("A", "D"), ("A", "C"))}
    a_b = pairs[("A", "B", 0)]
    assert len(a_b.weight_diff) == 4 and a_b.max_weight_diff <= 1e-6
    assert a_b.verdict in ("identical", "equal to float tolerance")
    assert pairs[("A", "D", 0)].max_weight_diff <= 1e-4
    assert pairs[("A", "C", 0)].verdict == "different" and pairs[("A", "C", 0)].loss_diff is None
    summary = result.summary("A")
    runs = result.runs_of("A")
    assert summary["validation_accuracy"] == pytest.approx(
        sum(run.metrics["validation_accuracy"] for run in runs) / 2
    )
    assert summary["epochs"] == 4
    for run in result.runs:
        assert int(run.confusion.sum()) == 30
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["agreement"][0]["pair"] == "A-B"
    assert len(data["designs"]["C"]["per_seed"]) == 2


def test_several_seeds_train_in_one_batch_and_compare_designs_paired(iris, tmp_path):
    config = TrainConfig(epochs=5, seed=3)
    result = compare(iris, "ABCD", config, seeds=3, out_dir=tmp_path / "run")
    assert result.seeds == (3, 4, 5) and len(result.runs) == 12
    alone = fit(
        get_design("C"),
        result.model_config,
        iris.train_features,
        iris.train_targets,
        iris.validation_features,
        iris.validation_targets,
        replace(config, seed=4),
    )
    batched = next(run for run in result.runs if run.design == "C" and run.seed == 4)
    for got, want in zip(batched.result.model.parameters(), alone.model.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert batched.history.column("validation_loss") == pytest.approx(
        alone.history.column("validation_loss"), rel=1e-4
    )
    statistics = result.seed_statistics()
    pairs = {(pair["a"], pair["b"]): pair for pair in statistics["pairs"]["validation_loss"]}
    # A's loss runs the fused kernel, B's log_softmax + NLL: equal up to float32 rounding.
    assert pairs[("A", "B")]["verdict"] in ("identical", "equal to float tolerance")
    assert abs(pairs[("A", "B")]["mean_difference"]) < 1e-6
    losses_c = [run.metrics["validation_loss"] for run in result.runs_of("C")]
    assert statistics["summary"]["validation_loss"]["C"]["mean"] == pytest.approx(sum(losses_c) / 3)
    assert (tmp_path / "run" / "seed_bands.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["seed_statistics"]["pairs"]["validation_loss"][0]["verdict"] in (
        "identical",
        "equal to float tolerance",
    )


def test_options_the_batched_engine_lacks_run_the_seeds_one_by_one(iris):
    result = compare(iris, "AB", TrainConfig(epochs=3, patience=2), seeds=2)
    assert {agreement.seed for agreement in result.agreements} == {0, 1}
    assert result.bands is None and result.seed_statistics() is not None


def test_a_diverged_run_still_gives_valid_json(iris):
    result = compare(iris, "AB", TrainConfig(epochs=2, learning_rate=1e38))
    assert math.isnan(result.summary("A")["validation_loss"])
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["designs"]["A"]["mean_over_seeds"]["validation_loss"] is None
    assert data["designs"]["A"]["per_seed"][0]["calibration"]["ece"] is None


def test_compare_refuses_bad_arguments(iris):
    with pytest.raises(ConfigError, match="seeds=0 must be an integer ≥ 1"):
        compare(iris, seeds=0)
    no_validation = PreparedData(
        iris.train_features, iris.train_targets, None, None, iris.class_names
    )
    with pytest.raises(ConfigError, match="compare needs validation rows"):
        compare(no_validation)
    with pytest.raises(ConfigError, match="unknown design 'X'"):
        parse_designs("AX")
    with pytest.raises(ConfigError, match="no design given"):
        parse_designs(", ")
    assert parse_designs(["b", "a,a"]) == ("A", "B")


def _assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    assert matplotlib.image.imread(path).ndim == 3


@pytest.mark.slow
def test_iris_comparison_reaches_the_goal_and_writes_everything(iris, tmp_path):
    result = compare(iris, "ABCD", TrainConfig(), out_dir=tmp_path / "run")
    for name in "AB":
        assert result.summary(name)["validation_accuracy"] >= 0.93
    a_b = next(a for a in result.agreements if (a.first, a.second) == ("A", "B"))
    assert a_b.max_weight_diff <= 1e-5 and a_b.max_loss_diff <= 1e-5
    run = tmp_path / "run"
    for name in ("loss_curves.png", "confusion_matrices.png", "calibration.png"):
        _assert_png(run / name)
    history = json.loads((run / "history.json").read_text())
    assert len(history["A"][0]["records"]) == 100
    report = json.loads((run / "report.json").read_text())
    assert report["designs"]["B"]["mean_over_seeds"]["validation_accuracy"] >= 0.93
    for name in "ABCD":
        saved = load_model(run / "models" / name)
        assert saved.design.name == name
        probabilities = saved.predict_proba(iris.validation_features)
        accuracy = (probabilities.argmax(1) == iris.validation_targets).double().mean()
        assert float(accuracy) == pytest.approx(result.summary(name)["validation_accuracy"])


def test_a_single_design_plots_on_one_panel(tmp_path):
    from softclass.evaluation.plots import plot_confusion_matrices

    path = plot_confusion_matrices(
        {"A": torch.tensor([[3, 1], [0, 4]])}, ["no", "yes"], tmp_path / "one.png"
    )
    _assert_png(path)
    assert [p.name for p in tmp_path.iterdir()] == ["one.png"]  # no temporary file left
