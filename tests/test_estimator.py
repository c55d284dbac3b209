"""softclass.Classifier: scikit-learn's own estimator checks, labels, designs, pickling, search."""

import pickle

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch.testing import assert_close
from torch_reference import torch_optimizer

import softclass
from softclass.errors import TrainingDiverged
from softclass.estimator import Classifier, expected_failed_checks
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLPConfig, build_mlp
from softclass.training import backend_choice, blas
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.batching import batch_bounds, epoch_permutation

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _iris():
    features, targets = load_iris(return_X_y=True)
    features = (features - features.mean(0)) / features.std(0)
    return features, np.array(["setosa", "versicolor", "virginica"])[targets]


@parametrize_with_checks(
    [Classifier(hidden_layer_sizes=(16,), max_iter=40, learning_rate_init=0.02, random_state=0)],
    expected_failed_checks=expected_failed_checks,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_string_labels_round_trip_and_probabilities_follow_classes():
    features, labels = _iris()
    model = Classifier(
        hidden_layer_sizes=(7,),
        activation="tanh",
        max_iter=150,
        learning_rate_init=0.02,
        random_state=0,
    ).fit(features, labels)
    assert list(model.classes_) == ["setosa", "versicolor", "virginica"]
    assert set(model.predict(features)) <= set(model.classes_)
    assert model.score(features, labels) > 0.9
    probabilities = model.predict_proba(features)
    np.testing.assert_allclose(probabilities.sum(1), 1.0)
    np.testing.assert_array_equal(model.classes_[probabilities.argmax(1)], model.predict(features))
    assert len(model.loss_curve_) == model.n_iter_ and model.validation_scores_ is None


@pytest.mark.parametrize("design", ["A", "B", "C", "D"])
def test_training_equals_the_single_model_loop_with_the_same_seed(design, training_path):
    features, labels = _iris()
    targets = np.unique(labels, return_inverse=True)[1]
    model = Classifier(
        hidden_layer_sizes=(7,),
        activation="tanh",
        design=design,
        solver="sgd",
        momentum=0.0,
        learning_rate_init=0.05,
        batch_size=16,
        max_iter=3,
        random_state=11,
    ).fit(features, labels)
    reference = build_mlp(MLPConfig(4, 3), 11)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)
    rule = get_design(design)
    table = torch.as_tensor(features, dtype=torch.float32)
    target_tensor = torch.as_tensor(targets)
    for epoch in range(3):
        order = epoch_permutation(150, 11, epoch)
        for start, stop in batch_bounds(150, 16):
            rows = order[start:stop]
            loss = rule.loss_from_logits(
                reference(table[rows]), rule.encode_targets(target_tensor[rows], 3)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for got, want in zip(model.to_mlp().parameters(), reference.parameters(), strict=True):
        assert_close(got, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        expected = rule.predict_proba(reference.double()(table.double()))
    np.testing.assert_allclose(model.predict_proba(features), expected.numpy(), rtol=1e-5)


def test_log_proba_is_stable_for_design_a_where_log_of_proba_is_not():
    features, labels = _iris()
    model = Classifier(hidden_layer_sizes=(7,), max_iter=5, random_state=0).fit(features, labels)
    far = features[:1] * 1e4
    log_probs = model.predict_log_proba(far)
    assert np.all(np.isfinite(log_probs))
    np.testing.assert_allclose(np.exp(log_probs).sum(1), 1.0)


def test_class_weight_and_sample_weight_change_the_fit():
    features, labels = _iris()
    labels = labels.copy()
    settings = dict(hidden_layer_sizes=(7,), max_iter=20, random_state=0, learning_rate_init=0.01)
    plain = Classifier(**settings).fit(features, labels).predict_proba(features)
    weighted = Classifier(**settings, class_weight={"virginica": 5.0}).fit(features, labels)
    assert weighted.predict_proba(features)[:, 2].mean() > plain[:, 2].mean()
    ones = Classifier(**settings).fit(features, labels, sample_weight=np.ones(150))
    np.testing.assert_allclose(ones.predict_proba(features), plain, rtol=1e-6)
    balanced = Classifier(**settings, class_weight="balanced").fit(features, labels)
    np.testing.assert_allclose(balanced.predict_proba(features), plain, rtol=1e-6)  # balanced data


def test_early_stopping_keeps_the_best_validation_weights():
    features, labels = _iris()
    model = Classifier(
        hidden_layer_sizes=(7,),
        early_stopping=True,
        n_iter_no_change=3,
        max_iter=500,
        random_state=0,
        learning_rate_init=0.01,
    ).fit(features, labels)
    assert model.n_iter_ < 500
    assert len(model.validation_scores_) == len(model.validation_loss_curve_) == model.n_iter_
    assert model.best_validation_score_ == max(model.validation_scores_)


def test_partial_fit_runs_one_epoch_per_call_and_matches_fit():
    features, labels = _iris()
    settings = dict(hidden_layer_sizes=(5,), batch_size=20, random_state=3)
    incremental = Classifier(**settings)
    for _ in range(4):
        incremental.partial_fit(features, labels, classes=np.unique(labels))
    full = Classifier(**settings, max_iter=4, tol=0.0, n_iter_no_change=100).fit(features, labels)
    assert incremental.n_iter_ == 4
    np.testing.assert_allclose(incremental.predict_proba(features), full.predict_proba(features))


def test_pickle_clone_pipeline_grid_search_and_polars():
    features, labels = _iris()
    model = Classifier(hidden_layer_sizes=(6,), max_iter=30, random_state=0).fit(features, labels)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(features), model.predict_proba(features))
    assert not hasattr(clone(model), "classes_")
    search = GridSearchCV(
        make_pipeline(StandardScaler(), Classifier(max_iter=30, random_state=0)),
        {"classifier__design": ["A", "C"], "classifier__hidden_layer_sizes": [(4,), (8,)]},
        cv=3,
    ).fit(features, labels)
    assert search.best_params_["classifier__design"] in ("A", "C")
    frame = pl.DataFrame(features, schema=["sepal_l", "sepal_w", "petal_l", "petal_w"])
    fitted = Classifier(max_iter=10, random_state=0).fit(frame, pl.Series(labels))
    assert list(fitted.feature_names_in_) == ["sepal_l", "sepal_w", "petal_l", "petal_w"]
    assert fitted.predict(frame).shape == (150,)
    assert softclass.Classifier is Classifier


def test_max_iter_without_convergence_warns():
    features, labels = _iris()
    with pytest.warns(ConvergenceWarning, match="reached max_iter=2"):
        Classifier(max_iter=2, random_state=0).fit(features, labels)


@pytest.mark.parametrize(
    ("params", "call", "match"),
    [
        ({"design": "no-such-design"}, "fit", "The 'design' parameter of Classifier must be"),
        ({"max_iter": 0}, "fit", "The 'max_iter' parameter of Classifier must be"),
        ({"hidden_layer_sizes": (4, 0)}, "fit", "hidden_layer_sizes must hold positive integers"),
        ({"device": "tpu-ish"}, "fit", "device='tpu-ish' is not a torch device"),
        ({"class_weight": {"rose": 2.0}}, "fit", r"class_weight names labels \['rose'\]"),
        ({"early_stopping": True}, "partial_fit", "partial_fit does not support early_stopping"),
        ({}, "partial_fit", "classes must be passed on the first call"),
        (
            {"early_stopping": True, "validation_fraction": 0.005},
            "fit",
            "validation set is too small",
        ),
    ],
)
def test_bad_settings_are_refused_with_clear_errors(params, call, match):
    features, labels = _iris()
    with pytest.raises(ValueError, match=match):
        getattr(Classifier(**{"max_iter": 2, **params}), call)(features, labels)


def test_partial_fit_refuses_unknown_labels_and_changed_classes():
    features, labels = _iris()
    model = Classifier(max_iter=2).partial_fit(features, labels, classes=np.unique(labels))
    with pytest.raises(ValueError, match=r"labels \['rose'\] that are not in classes_"):
        model.partial_fit(features[:2], np.array(["rose", "setosa"]))
    with pytest.raises(ValueError, match="differs from the classes of the first"):
        model.partial_fit(features, labels, classes=["a", "b"])


@pytest.mark.parametrize("with_blas", [True, False])
def test_fit_takes_the_compiled_path_for_small_networks_and_wide_ones_with_blas(
    monkeypatch, with_blas
):
    if not with_blas:
        monkeypatch.setattr(blas, "gemm", lambda: None)
    backend_choice.clear_decisions()
    taken = []
    torch_step = BatchedTrainer._step

    def recording_step(self, *args):
        taken.append(self.config.hidden)
        return torch_step(self, *args)

    monkeypatch.setattr(BatchedTrainer, "_step", recording_step)
    features, labels = _iris()
    Classifier(hidden_layer_sizes=(7,), max_iter=2, random_state=0).fit(features, labels)
    assert taken == []
    wide = Classifier(hidden_layer_sizes=(300,), max_iter=1, batch_size=75, random_state=0)
    wide.fit(features, labels)
    assert taken == ([] if with_blas else [(300,), (300,)])
    backend_choice.clear_decisions()


@pytest.mark.parametrize("solver", ["sgd", "adam", "adamw"])
def test_alpha_is_the_registry_optimizers_weight_decay(solver):
    features, labels = _iris()
    targets = torch.as_tensor(np.unique(labels, return_inverse=True)[1])
    options = {"solver": solver, "alpha": 0.05, "momentum": 0.9, "learning_rate_init": 0.01}
    model = Classifier(
        hidden_layer_sizes=(5,),
        activation="tanh",
        batch_size=32,
        max_iter=2,
        random_state=3,
        **options,
    ).fit(features, labels)
    reference = build_mlp(MLPConfig(4, 3, hidden=(5,), activation="tanh"), 3)
    from softclass.training.config import TrainConfig

    config = TrainConfig(
        optimizer=solver,
        learning_rate=0.01,
        momentum=0.9 if solver == "sgd" else 0.0,
        weight_decay=0.05,
    )
    optimizer = torch_optimizer(solver, reference.parameters(), config.optimizer_params)
    table = torch.as_tensor(features, dtype=torch.float32)
    rule = get_design("A")
    for epoch in range(2):
        order = epoch_permutation(150, 3, epoch)
        for start, stop in batch_bounds(150, 32):
            rows = order[start:stop]
            loss = rule.loss_from_logits(reference(table[rows]), targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for got, want in zip(model.to_mlp().parameters(), reference.parameters(), strict=True):
        assert_close(got, want, rtol=1e-5, atol=1e-6)


# -- the command line's divergence rule (issue 22) ------------------------------------------------


def test_negative_sample_weights_are_refused():
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        Classifier(max_iter=2).fit(X, y, sample_weight=-np.ones(len(y)))


def test_inputs_beyond_float32_are_refused_before_training():
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match=r"X holds a value of magnitude 7.9e\+300, beyond float32"):
        Classifier(max_iter=2).fit(X * 1e300, y)


def test_a_huge_learning_rate_stops_the_fit_with_the_divergence_rule():
    X, y = load_iris(return_X_y=True)
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch \d+: .*learning_rate_init"):
        Classifier(learning_rate_init=1e6, max_iter=50, random_state=0).fit(X, y)


def test_predict_proba_never_returns_nan():
    X, y = load_iris(return_X_y=True)
    fitted = Classifier(max_iter=5, random_state=0).fit(X, y)
    with torch.no_grad():
        next(iter(fitted._trainer.network.parameters())).fill_(float("inf"))
    with pytest.raises(ValueError, match=r"150 of 150 row\(s\) of X get NaN or infinite"):
        fitted.predict_proba(X)


def test_every_optimizer_hyper_parameter_is_a_parameter():
    from dataclasses import fields

    from softclass.mlp.optimizer_params import DEFAULTS, OptimizerParams
    from softclass.option_table import options_of

    parameters = Classifier().get_params()
    for item in fields(OptimizerParams):
        declared = options_of(OptimizerParams)[item.name]
        assert (declared.sklearn or item.name) in parameters
    assert parameters["betas"] == DEFAULTS.betas and parameters["eps"] == DEFAULTS.eps
    assert clone(Classifier(eps=1e-6, betas=(0.8, 0.99))).get_params()["betas"] == (0.8, 0.99)


def test_the_generated_parameters_reach_the_training_options():
    X, y = load_iris(return_X_y=True)
    model = Classifier(
        hidden_layer_sizes=(5,), max_iter=2, solver="adam", betas=[0.8, 0.95], eps=1e-6
    )
    with pytest.warns(ConvergenceWarning):
        model.fit(X, y)
    settings = model._trainer.settings  # the run's TrainConfig
    assert (settings.optimizer, settings.betas, settings.eps) == ("adam", (0.8, 0.95), 1e-6)


def test_a_refused_generated_parameter_is_named_as_the_estimator_spells_it():
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match=r"betas=\(0\.9, 1\.5\) must be two numbers in \[0, 1\)"):
        Classifier(max_iter=1, betas=(0.9, 1.5)).fit(X, y)
    with pytest.raises(ValueError, match=r"nesterov=True needs solver='sgd'"):
        Classifier(max_iter=1, solver="adam", nesterov=True).fit(X, y)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['tau'\]"):
        Classifier(tau=0.9)
