"""Label smoothing as an option of a run: every design of the registry trains against the targets
(1 - ε)·onehot + ε/C, on every backend, and A = B = D still holds."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torch_reference import torch_optimizer

from softclass import Classifier, functional
from softclass.data import load_bundled
from softclass.data.prepare import prepare_table
from softclass.errors import ConfigError, OptionError
from softclass.jobs.compare import compare
from softclass.mlp import designs
from softclass.mlp.designs import DESIGNS, get_design
from softclass.mlp.model import MLPConfig, build_mlp
from softclass.training.batching import batch_bounds, epoch_permutation
from softclass.training.config import TrainConfig
from softclass.training.engine import train_model
from softclass.training.ensemble import Member, train_ensemble

pytestmark = pytest.mark.usefixtures("one_thread")

N_FEATURES, N_CLASSES = 3, 5


def _torch_loss(name: str, logits, targets, smoothing: float, reduction: str = "mean"):
    """What design ``name`` smoothed by ``smoothing`` computes, written with torch's own
    functions: cross_entropy(label_smoothing=ε) for the likelihood designs A, B, D; the squared
    error of softmax against (1 - ε)·onehot + ε/C for C."""
    if name != "C":
        return F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction=reduction)
    n_classes = logits.shape[-1]
    smoothed = F.one_hot(targets, n_classes).to(logits.dtype) * (1 - smoothing)
    rows = (torch.softmax(logits, -1) - (smoothed + smoothing / n_classes)).square().sum(-1)
    return {"none": rows, "sum": rows.sum(), "mean": rows.mean()}[reduction]


SHAPES = [(1, 1), (1, 3), (4, 2), (7, 5), (17, 13), (9, 131)]


@pytest.mark.parametrize("smoothing", [0.0, 0.05, 0.1, 0.5, 0.99])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{c}" for n, c in SHAPES])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", [name for name, design in DESIGNS.items() if design.smoothing])
def test_every_smoothed_design_gives_torchs_loss_and_gradient(name, shape, reduction, smoothing):
    n_rows, n_classes = shape
    generator = torch.Generator().manual_seed(n_rows * 1000 + n_classes)
    logits = (3 * torch.randn(shape, generator=generator, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, n_classes, (n_rows,), generator=generator)
    design = get_design(name).smoothed(smoothing)
    encoded = design.encode_targets(targets, n_classes)
    if encoded.is_floating_point():
        encoded = encoded.double()
    got = design.loss(design.output(logits), encoded, reduction=reduction)
    want = _torch_loss(name, logits, targets, smoothing, reduction)
    assert_close(got, want)
    upstream = torch.linspace(0.5, 1.5, got.numel(), dtype=torch.float64).reshape(got.shape)
    (got_grad,) = torch.autograd.grad(got, logits, upstream)
    (want_grad,) = torch.autograd.grad(want, logits, upstream)
    assert_close(got_grad, want_grad)


def test_b_smoothed_is_torchs_cross_entropy_of_the_logits_to_the_last_bit_in_float64():
    logits = torch.randn(64, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    targets = torch.arange(64) % 10
    b = designs.nll_smoothed(functional.log_softmax(logits, 1), targets, label_smoothing=0.1)
    torch_value = F.cross_entropy(logits, targets, label_smoothing=0.1)
    assert abs(float(b) - float(torch_value)) <= 1e-15 * float(torch_value)


def test_unsmoothed_b_is_functional_nll_loss_itself():
    log_probs = functional.log_softmax(torch.randn(6, 4), 1)
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.equal(
        designs.nll_smoothed(log_probs, targets), functional.nll_loss(log_probs, targets)
    )
    assert get_design("B").smoothed(0.0) is get_design("B")


def _reference(name, seed, smoothing, config, model_config, features, targets):
    """One model trained by torch.optim with torch's own smoothed loss (:func:`_torch_loss`)."""
    model = build_mlp(model_config, seed).double()
    optimizer = torch_optimizer(config.optimizer, model.parameters(), config.optimizer_params)
    for epoch in range(config.epochs):
        order = epoch_permutation(features.shape[0], seed, epoch)
        for start, stop in batch_bounds(features.shape[0], config.batch_size):
            rows = order[start:stop]
            loss = _torch_loss(name, model(features[rows]), targets[rows], smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


def _table(n_rows=23):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(n_rows, N_FEATURES, generator=generator, dtype=torch.float64)
    return features, torch.randint(0, N_CLASSES, (n_rows,), generator=generator)


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_every_backend_trains_every_design_against_smoothed_targets(backend):
    features, targets = _table()
    model_config = MLPConfig(N_FEATURES, N_CLASSES, hidden=(6,), activation="tanh")
    config = TrainConfig(
        epochs=3, batch_size=5, optimizer="adam", learning_rate=0.05, backend=backend,
        label_smoothing=0.2,
    )  # fmt: skip
    members = [Member(name, 1) for name, design in DESIGNS.items() if design.smoothing]
    result = train_ensemble(
        model_config, members, features, targets, config, dtype=torch.float64,
        val_features=features[:8], val_targets=targets[:8],
    )  # fmt: skip
    assert result.backend == backend
    for position, member in enumerate(members):
        expected = _reference(member.design, 1, 0.2, config, model_config, features, targets)
        for got, want in zip(
            result.model(position).parameters(), expected.parameters(), strict=True
        ):
            assert_close(got, want, rtol=1e-10, atol=1e-12)
        with torch.no_grad():
            val_loss = _torch_loss(member.design, expected(features[:8]), targets[:8], 0.2)
        assert result.val_loss[position, -1] == pytest.approx(float(val_loss), rel=1e-9)


def test_the_autograd_backend_trains_the_same_smoothed_model_as_the_batched_one():
    features, targets = _table()
    model_config = MLPConfig(N_FEATURES, N_CLASSES, hidden=(6,))
    trained = {}
    for backend in ("autograd", "torch"):
        config = TrainConfig(epochs=2, batch_size=5, backend=backend, label_smoothing=0.3)
        trained[backend] = train_model(
            get_design("B"), model_config, config, features.float(), targets
        )
    plain = train_model(
        get_design("B"), model_config, TrainConfig(epochs=2, batch_size=5, backend="autograd"),
        features.float(), targets,
    )  # fmt: skip
    for got, want in zip(
        trained["autograd"].model.parameters(), trained["torch"].model.parameters(), strict=True
    ):
        assert_close(got, want, rtol=1e-5, atol=1e-6)
    first = next(iter(trained["autograd"].model.parameters()))
    assert not torch.equal(first, next(iter(plain.model.parameters())))  # the smoothing was read


def test_compare_still_shows_a_equal_b_equal_d_with_smoothing():
    iris = prepare_table(load_bundled("iris"), seed=0)
    result = compare(iris, "ABCD", TrainConfig(epochs=4, label_smoothing=0.1))
    pairs = {(a.first, a.second): a for a in result.agreements}
    assert pairs[("A", "B")].max_weight_diff <= 1e-6
    assert pairs[("A", "B")].verdict in ("identical", "equal up to rounding")
    assert pairs[("A", "D")].max_weight_diff <= 1e-4
    assert pairs[("A", "C")].verdict == "different"
    plain = compare(iris, "A", TrainConfig(epochs=4))
    assert plain.runs_of("A")[0].metrics != result.runs_of("A")[0].metrics
    for run in result.runs:  # the own loss reported is the smoothed one the design trained on
        with torch.no_grad():
            logits = run.result.model(iris.validation_features).double()
        want = _torch_loss(run.design, logits, iris.validation_targets, 0.1)
        assert run.metrics["validation_loss"] == pytest.approx(float(want), rel=1e-5)


def test_a_design_without_a_smoothing_fact_refuses_smoothing_naming_the_takers(monkeypatch):
    monkeypatch.setitem(DESIGNS, "E", dataclasses.replace(DESIGNS["A"], name="E", smoothing=None))
    assert get_design("E").smoothed(0.0) is get_design("E")
    with pytest.raises(ConfigError, match=r"design 'E' does not take label smoothing.*A, B, C, D"):
        get_design("E").smoothed(0.1)
    with pytest.raises(ConfigError, match=r"design 'E' does not take label smoothing"):
        train_ensemble(
            MLPConfig(N_FEATURES, N_CLASSES), [Member("E", 0)], *_table(),
            TrainConfig(epochs=1, label_smoothing=0.1),
        )  # fmt: skip


def test_a_smoothing_fact_needs_a_loss_that_takes_the_smoothing():
    with pytest.raises(ConfigError, match=r"design 'E': fact 'smoothing' is given but its loss"):
        dataclasses.replace(DESIGNS["B"], name="E", loss=functional.nll_loss)
    with pytest.raises(ConfigError, match=r"design 'E': fact 'smoothing' is missing"):
        dataclasses.replace(DESIGNS["B"], name="E", smoothing="")


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_smoothing_outside_0_to_1_is_refused_everywhere(value):
    with pytest.raises(ConfigError, match=rf"label smoothing {value} for design 'A'"):
        get_design("A").smoothed(value)
    with pytest.raises(OptionError, match=r"label_smoothing"):
        TrainConfig(label_smoothing=value)
    with pytest.raises(ValueError, match=r"label_smoothing"):
        Classifier(label_smoothing=value).fit([[0.0], [1.0]], [0, 1])


@pytest.mark.parametrize("loss", [functional.mcee, functional.mse_onehot])
def test_probability_losses_refuse_a_smoothing_outside_0_to_1(loss):
    probs = torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=rf"{loss.__name__}: label_smoothing must be between"):
        loss(probs, torch.tensor([0, 1]), label_smoothing=1.5)


def test_probability_losses_smooth_soft_targets_as_torch_does():
    logits = torch.randn(5, 4, dtype=torch.float64)
    soft = torch.softmax(torch.randn(5, 4, dtype=torch.float64), 1)
    got = functional.mcee(torch.softmax(logits, 1), soft, label_smoothing=0.2)
    assert_close(got, F.cross_entropy(logits, soft, label_smoothing=0.2))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_estimator_trains_with_smoothing_and_keeps_the_parameter():
    features, targets = _table(40)
    kwargs = {"hidden_layer_sizes": (5,), "max_iter": 3, "random_state": 0}
    smoothed = Classifier(label_smoothing=0.2, **kwargs).fit(features.numpy(), targets.numpy())
    plain = Classifier(**kwargs).fit(features.numpy(), targets.numpy())
    assert smoothed.get_params()["label_smoothing"] == 0.2
    assert smoothed.loss_curve_ != plain.loss_curve_
    config = TrainConfig(epochs=3, label_smoothing=0.2)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    older = {key: value for key, value in config.to_dict().items() if key != "label_smoothing"}
    assert TrainConfig.from_dict(older).label_smoothing == 0.0


def test_train_saves_the_smoothing_in_the_model_directory_and_says_it(run, tmp_path):
    from pathlib import Path

    from softclass.data.bundled import bundled_path
    from softclass.jobs.store import load_model

    model_dir = tmp_path / "model"
    arguments = ("--design", "B", "--epochs", "2", "--label-smoothing", "0.1", "--out", model_dir)
    code, out, err = run("train", bundled_path("iris"), *arguments)
    assert code == 0, err
    assert "design B (log_softmax + NLL, label smoothing 0.1)" in out
    saved = json.loads((model_dir / "model.json").read_text())
    assert saved["train_config"]["label_smoothing"] == 0.1
    assert load_model(model_dir).train_config.label_smoothing == 0.1
    settings = (model_dir / "report.html").read_text().split('id="table-settings"')[1]
    assert "label_smoothing" in settings.split("</table>")[0]
    compared = ("--epochs", "2", "--label-smoothing", "0.05", "--out", tmp_path / "compare")
    code, out, err = run("compare", *compared)
    assert code == 0, err
    assert "label smoothing 0.05" in out
    old = Path(__file__).resolve().parents[1] / "fixtures" / "main_6f3aaeb" / "model"
    assert "label_smoothing" not in json.loads((old / "model.json").read_text())["train_config"]
    assert load_model(old).train_config.label_smoothing == 0.0
