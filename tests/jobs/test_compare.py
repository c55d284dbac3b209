"""The comparison of designs A–D: agreement numbers, measurements, outputs."""

import json
from dataclasses import replace

import matplotlib.image
import pytest
import torch
from PIL import Image

from softclass.data import load_bundled
from softclass.data.prepare import PreparedData, prepare_table
from softclass.errors import ConfigError, DataError, TrainingDiverged
from softclass.evaluation.stats import common_metrics
from softclass.functional import nll_loss
from softclass.jobs.compare import (
    compare,
    parse_designs,
    split_stopping_rows,
)
from softclass.jobs.store import load_model
from softclass.mlp.designs import DESIGNS, get_design
from softclass.training.backends.autograd import fit
from softclass.training.config import TrainConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def iris():
    return prepare_table(load_bundled("iris"), seed=0)


def test_short_comparison_reports_agreement_and_metrics(iris):
    result = compare(iris, "DCBA", TrainConfig(epochs=4), seeds=2)
    assert result.designs == ("A", "B", "C", "D") and result.seeds == (0, 1)
    pairs = {(a.first, a.second, a.seed): a for a in result.agreements}
    # Several seeds: every model from the batched engine; the lockstep agreement for the first.
    assert set(pairs) == {(x, y, 0) for x, y in (("A", "B"), ("A", "D"), ("A", "C"))}
    a_b = pairs[("A", "B", 0)]
    assert len(a_b.weight_diff) == 4 and a_b.max_weight_diff <= 1e-6
    assert a_b.verdict in ("identical", "equal up to rounding")
    assert a_b.max_gradient_diff <= 1e-12 and a_b.gradient_epochs == [1, 2, 3, 4]
    assert pairs[("A", "D", 0)].max_weight_diff <= 1e-4
    a_c = pairs[("A", "C", 0)]
    assert a_c.verdict == "different" and a_c.loss_diff is None and a_c.max_gradient_diff > 0.1
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
    pairs = {(pair["a"], pair["b"]): pair for pair in statistics["pairs"]["validation_log_loss"]}
    # A's loss runs the fused kernel, B's log_softmax + NLL: equal up to float32 rounding.
    assert pairs[("A", "B")]["verdict"] in ("identical", "equal to float tolerance")
    assert abs(pairs[("A", "B")]["mean_difference"]) < 1e-6
    log_losses_c = [run.metrics["validation_log_loss"] for run in result.runs_of("C")]
    assert statistics["summary"]["validation_log_loss"]["C"]["mean"] == pytest.approx(
        sum(log_losses_c) / 3
    )
    assert (tmp_path / "run" / "seed_bands.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["seed_statistics"]["pairs"]["validation_log_loss"][0]["verdict"] in (
        "identical",
        "equal to float tolerance",
    )


def test_seed_statistics_never_pair_different_loss_functions(iris):
    result = compare(iris, "ABCD", TrainConfig(epochs=3), seeds=3)
    statistics = result.seed_statistics()
    # Designs are paired on measures common to all of them, never on their own losses.
    assert list(statistics["pairs"]) == list(common_metrics())
    assert list(statistics["summary"]) == list(common_metrics())
    for metric, pairs in statistics["pairs"].items():
        label = f"validation {common_metrics()[metric].name}"
        assert len(pairs) == 6
        for pair in pairs:
            assert pair["metric"] == label
            assert pair["description"].startswith(f"{pair['a']} vs {pair['b']} on {label}: ")
    # Each design's own loss is summarised for that design alone, named by its loss function.
    own = statistics["own_loss"]
    assert {name: own[name]["loss"] for name in "ABCD"} == {
        "A": "cross_entropy",
        "B": "nll",
        "C": "mse",
        "D": "mcee",
    }
    losses_c = [run.metrics["validation_loss"] for run in result.runs_of("C")]
    assert own["C"]["mean"] == pytest.approx(sum(losses_c) / 3)
    # The A vs C log loss pair compares the same quantity: log loss of each design's probabilities.
    a_c = next(
        p for p in statistics["pairs"]["validation_log_loss"] if (p["a"], p["b"]) == ("A", "C")
    )
    log_loss = {name: result._per_seed(name, "validation_log_loss") for name in "AC"}
    differences = [a - c for a, c in zip(log_loss["A"], log_loss["C"], strict=True)]
    assert a_c["mean_difference"] == pytest.approx(sum(differences) / 3)
    data = result.to_dict()
    assert data["metrics"]["validation_loss"]["kind"] == "own loss"
    assert data["metrics"]["validation_log_loss"]["kind"] == "common"


def test_early_stopping_chooses_the_epoch_on_rows_apart_from_the_reported_ones(iris):
    result = compare(iris, "AC", TrainConfig(epochs=40, patience=3, learning_rate=0.1))
    # 120 training rows: a tenth of each class chooses the epoch; the 30 validation rows stay apart.
    assert (result.n_train, result.n_stopping, result.n_validation) == (108, 12, 30)
    fitted, (stopping_features, stopping_targets) = split_stopping_rows(iris, 0.1, 0)
    # Every training row goes to exactly one part (Iris has duplicate rows: compare multisets).
    parts = torch.cat([fitted.train_features, stopping_features])
    assert parts.shape == (120, 4) and fitted.train_features.shape == (108, 4)
    assert sorted(map(tuple, parts.tolist())) == sorted(map(tuple, iris.train_features.tolist()))
    assert torch.equal(fitted.validation_features, iris.validation_features)
    assert torch.bincount(stopping_targets).tolist() == [4, 4, 4]
    for run in result.runs:
        history = run.history
        assert history.best_epoch is not None
        model, design = run.result.model, run.result.design
        with torch.no_grad():
            on_stopping = design.loss_from_logits(
                model(stopping_features), design.encode_targets(stopping_targets, 3)
            )
            on_validation = design.loss_from_logits(
                model(iris.validation_features), design.encode_targets(iris.validation_targets, 3)
            )
        # The epoch was chosen on the stopping rows (its recorded loss is theirs, best weights
        # restored) and the reported loss is the validation rows' own.
        best = history.records[history.best_epoch - 1]
        assert best.validation_loss == pytest.approx(float(on_stopping), rel=1e-5)
        assert run.metrics["validation_loss"] == pytest.approx(float(on_validation), rel=1e-6)
        assert run.metrics["validation_loss"] != pytest.approx(best.validation_loss, rel=1e-3)
        assert int(run.confusion.sum()) == 30
    report = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert report["rows"] == {"train": 108, "stopping": 12, "validation": 30}
    assert report["history_rows"] == "stopping"
    assert "choose the epoch" in report["row_roles"]["stopping"]
    assert "never trained on, never chose the epoch" in report["row_roles"]["validation"]
    plain = compare(iris, "A", TrainConfig(epochs=2))
    assert plain.n_stopping == 0 and plain.to_dict()["row_roles"].keys() == {"train", "validation"}


def test_the_stopping_share_is_checked(iris):
    with pytest.raises(ConfigError, match=r"--stopping 1\.0: early stopping needs a share"):
        compare(iris, "A", TrainConfig(epochs=2, patience=1), stopping_fraction=1.0)
    with pytest.raises(ConfigError, match="--stopping 'x': expected a number"):
        split_stopping_rows(iris, "x", 0)
    tiny = PreparedData(
        torch.zeros(2, 4), torch.tensor([0, 1]), torch.zeros(2, 4), torch.tensor([0, 1]), ("a", "b")
    )
    with pytest.raises(DataError, match="no rows left to choose the epoch on: 2 training rows"):
        split_stopping_rows(tiny, 0.1, 0)


def _synthetic(rows: int, features: int, classes: int) -> PreparedData:
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(features, classes, generator=generator)
    train = torch.randn(rows, features, generator=generator)
    noise = 0.5 * torch.randn(rows, classes, generator=generator)
    validation = torch.randn(200, features, generator=generator)
    return PreparedData(
        train,
        (train @ weights + noise).argmax(1),
        validation,
        (validation @ weights).argmax(1),
        tuple(f"class {index}" for index in range(classes)),
    )


def test_a_vs_b_is_rounding_even_when_float32_weights_drift_far_apart():
    # Many large steps: float32 rounding of A's fused kernel and B's log_softmax + NLL grows
    # until the weights are visibly apart (the old check said "different" above 1e-3).
    data = _synthetic(1000, 20, 10)
    config = TrainConfig(epochs=10, optimizer="sgd", learning_rate=0.1, batch_size=8)
    result = compare(data, "AB", config, hidden=(64,), activation="relu")
    a_b = result.agreements[0]
    assert a_b.max_weight_diff > 1e-3
    assert a_b.max_gradient_diff <= 1e-12
    assert a_b.verdict == "equal up to rounding"
    # The noise floor of the same run: A against itself nudged by one ulp drifts as far.
    assert a_b.noise_floor is not None and a_b.noise_floor > 1e-3
    assert "noise floor" in a_b.method and "float64" in a_b.method
    assert "every step makes the same update" in a_b.explanation()
    record = a_b.to_dict()
    assert record["noise_floor"] == a_b.noise_floor and record["verdict"] == "equal up to rounding"


def test_a_really_different_loss_is_reported_as_different(iris, monkeypatch):
    # B made to train on twice the NLL: the same minimiser, but not the same computation.
    doubled = replace(
        DESIGNS["B"],
        loss=lambda outputs, targets, **options: 2 * nll_loss(outputs, targets, **options),
    )
    monkeypatch.setitem(DESIGNS, "B", doubled)
    result = compare(iris, "AB", TrainConfig(epochs=3))
    a_b = result.agreements[0]
    assert a_b.max_gradient_diff == pytest.approx(1.0, rel=1e-6)  # |g - 2g| / |g|
    assert a_b.verdict == "different"
    assert "another loss" in a_b.explanation()


@pytest.mark.parametrize(
    "options", [{"precision": "bf16"}, {"backend": "autograd"}], ids=["bf16", "autograd"]
)
def test_options_the_batched_engine_lacks_run_the_seeds_one_by_one(iris, options):
    result = compare(iris, "AB", TrainConfig(epochs=3, **options), seeds=2)
    assert {agreement.seed for agreement in result.agreements} == {0, 1}
    assert result.bands is None and result.seed_statistics() is not None


@pytest.mark.parametrize("seeds", [1, 3])
def test_early_stopping_trains_every_model_once_in_the_engine(iris, seeds):
    config = TrainConfig(epochs=60, patience=2, learning_rate=0.05)
    result = compare(iris, "ABC", config, seeds=seeds)
    # The first seed's pairs only, compared while both models trained.
    assert {agreement.seed for agreement in result.agreements} == {0}
    assert (result.bands is not None) == (seeds > 1)
    assert result.history_rows == "stopping" and result.n_stopping > 0
    for run in result.runs:
        assert len(run.history.records) <= 60
    a_b = result.agreements[0]
    first = {run.design: run for run in result.runs if run.seed == 0}
    both = min(len(first["A"].history.records), len(first["B"].history.records))
    assert len(a_b.weight_diff) == both and a_b.same_gradients
    assert len(result.runs) == 3 * seeds


@pytest.mark.parametrize("seeds", [1, 2])  # the lockstep trainers and the batched engine
def test_a_diverged_run_stops_naming_the_epoch_and_writes_nothing(iris, tmp_path, seeds):
    with pytest.raises(
        TrainingDiverged,
        match=r"diverged at epoch 1 \(design A( seed 0)?\).*lower the learning rate "
        r"\(now 1e\+38, --lr\) or scale the features",
    ):
        compare(
            iris,
            "AB",
            TrainConfig(epochs=2, learning_rate=1e38),
            seeds=seeds,
            out_dir=tmp_path / "r",
        )
    assert not (tmp_path / "r").exists()


def test_compare_refuses_bad_arguments(iris):
    with pytest.raises(ConfigError, match="seeds=0 must be an integer from 1 to 1,000"):
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
    # A (fused cross entropy) and B (log_softmax + nll_loss) differ by float32 rounding only.
    assert a_b.max_gradient_diff <= 1e-12 and a_b.noise_floor is None
    assert a_b.verdict in ("identical", "equal up to rounding")
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
