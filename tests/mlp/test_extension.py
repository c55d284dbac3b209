"""Adding a design, an activation and an optimizer is one registry entry each: registered at run
time (torch backend: no compiled branch), they reach --help, compare's table and agreement,
train, predict, the report and its figures, and softclass.Classifier with nothing else edited."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from softclass import Classifier, functional
from softclass.data import bundled_path
from softclass.evaluation import plots
from softclass.mlp import activations, designs, optimizers
from softclass.mlp.activations import Activation, register_activation
from softclass.mlp.designs import Design, register_design
from softclass.mlp.optimizers import BatchedState, Optimizer, OptimizerParams, register_optimizer
from softclass.option_table import names_text

pytestmark = pytest.mark.usefixtures("one_thread")

IRIS = bundled_path("iris")
SMOOTHING = 0.1
NEW = next(letter for letter in "EFGHIJKLMNOPQRSTUVWXYZ" if letter not in designs.DESIGNS)


def _smoothed_cross_entropy(logits, targets, reduction="mean"):
    return functional.cross_entropy(logits, targets, reduction=reduction, label_smoothing=SMOOTHING)


def _mish_backward(grad, pre, out):
    """d/dx x·tanh(softplus(x)) = tanh(sp) + x·(1 - tanh(sp)²)·σ(x)."""
    tanh_softplus = torch.tanh(nn.functional.softplus(pre))
    return grad * (tanh_softplus + pre * (1.0 - tanh_softplus**2) * torch.sigmoid(pre))


def _adagrad_step(parameters, gradients, state: BatchedState, params: OptimizerParams) -> None:
    """torch.optim.Adagrad (no learning-rate decay) on a list of tensors."""
    state.step_count += 1
    if params.weight_decay != 0.0:
        gradients = torch._foreach_add(gradients, parameters, alpha=params.weight_decay)
    torch._foreach_addcmul_(state.first_moments, gradients, gradients, value=1.0)
    denominators = torch._foreach_sqrt(state.first_moments)
    torch._foreach_add_(denominators, params.eps)
    torch._foreach_addcdiv_(parameters, gradients, denominators, value=-params.learning_rate)


DESIGN_E = Design(
    NEW,
    "logits + label-smoothed cross entropy",
    "cross_entropy",
    "index",
    lambda logits: logits,
    _smoothed_cross_entropy,
    lambda logits: functional.softmax(logits, 1),
    lambda logits: functional.log_softmax(logits, 1),
    label="CE ε=0.1",
    color="#9467bd",
    linestyle="-.",
    relation="another loss",
    meaning=f"{NEW} smooths the targets of A (ε = 0.1): another loss, with another minimiser.",
)
MISH = Activation("mish", nn.Mish, nn.functional.mish, _mish_backward, None)
ADAGRAD = Optimizer("adagrad", "Adagrad", 1, _adagrad_step, None)


@pytest.fixture
def extended():
    """Design NEW (E when no E ships), activation mish and optimizer adagrad, for one test."""
    register_design(DESIGN_E)
    register_activation(MISH)
    register_optimizer(ADAGRAD)
    yield
    del designs.DESIGNS[NEW], activations.ACTIVATIONS["mish"], optimizers.OPTIMIZERS["adagrad"]


def test_the_new_entries_match_their_torch_references(extended):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 4, (6,), generator=generator)
    assert_close(
        DESIGN_E.loss_from_logits(logits, DESIGN_E.encode_targets(targets, 4)),
        torch.nn.functional.cross_entropy(logits, targets, label_smoothing=SMOOTHING),
    )
    pre = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(nn.functional.mish(pre).sum(), pre)
    assert_close(_mish_backward(torch.ones_like(pre), pre, None), expected)
    params = OptimizerParams(learning_rate=0.05, eps=1e-6, weight_decay=0.01)
    ours = [torch.randn(3, 2, generator=generator)]
    reference = [ours[0].clone().requires_grad_()]
    torch_adagrad = torch.optim.Adagrad(reference, lr=0.05, eps=1e-6, weight_decay=0.01)
    state = ADAGRAD.new_state(ours)
    for _ in range(3):
        gradient = torch.randn(3, 2, generator=generator)
        ADAGRAD.batched_step(ours, [gradient], state, params)
        reference[0].grad = gradient.clone()
        torch_adagrad.step()
    assert_close(ours[0], reference[0].detach())


def test_help_lists_the_new_entries(extended, run):
    _, compare_help, _ = run("compare", "--help")
    _, train_help, _ = run("train", "--help")
    compare_text, train_text = (
        " ".join(text.replace("│", " ").split()) for text in (compare_help, train_help)
    )
    for registry in (designs.DESIGNS, activations.ACTIVATIONS, optimizers.OPTIMIZERS):
        assert names_text(registry) in compare_text and names_text(registry) in train_text
    assert NEW in designs.DESIGNS and "mish" in compare_text and "adagrad" in train_text


def test_compare_train_predict_and_the_report_carry_the_new_entries(
    extended, run, tmp_path, monkeypatch
):
    drawn = {}
    for builder in ("loss_curves_figure", "calibration_figure", "agreement_figure"):
        original = getattr(plots, builder)

        def recording(*args, _original=original, _builder=builder, **kwargs):
            drawn[_builder] = (list(args[0]), kwargs["styles"])
            return _original(*args, **kwargs)

        monkeypatch.setattr(plots, builder, recording)
    network = ("--epochs", "3", "--activation", "mish", "--optimizer", "adagrad")
    code, out, err = run("compare", *network, "--out", tmp_path / "compare")
    assert code == 0, err
    table = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] != []}
    assert "CE ε=0.1" in table[NEW]  # its own loss label, from the entry
    assert f"A vs {NEW}: different" in out
    report = json.loads((tmp_path / "compare" / "report.json").read_text())
    assert list(report["designs"]) == list(designs.DESIGNS)
    assert f"A-{NEW}" in {agreement["pair"] for agreement in report["agreement"]}
    page = (tmp_path / "compare" / "report.html").read_text()
    assert DESIGN_E.meaning in page
    assert drawn["loss_curves_figure"] == (
        list(designs.DESIGNS),
        {name: (entry.color, entry.linestyle) for name, entry in designs.DESIGNS.items()},
    )
    assert NEW in drawn["calibration_figure"][0]
    assert f"A vs {NEW}" in drawn["agreement_figure"][0]
    assert drawn["agreement_figure"][1][NEW] == ("#9467bd", "-.")

    model = tmp_path / "model"
    code, out, err = run("train", IRIS, "--out", model, "--design", NEW, *network)
    assert code == 0, err
    assert f"design {NEW} (logits + label-smoothed cross entropy)" in out
    saved = json.loads((model / "model.json").read_text())
    assert saved["train_config"]["optimizer"] == "adagrad"
    code, out, err = run("predict", model, IRIS, "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 150
    probabilities = [rows[0][name] for name in ("setosa", "versicolor", "virginica")]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-6)
    assert rows[0]["predicted"] in ("setosa", "versicolor", "virginica")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 5 epochs
def test_the_estimator_takes_the_new_entries(extended):
    import polars

    table = polars.read_csv(IRIS)
    features, labels = table[:, :4].to_numpy(), table[:, 4].to_numpy()
    model = Classifier(
        design=NEW, activation="mish", solver="adagrad", max_iter=5, random_state=0
    ).fit(features, labels)
    assert model.design_ == NEW
    probabilities = model.predict_proba(features)
    assert probabilities.shape == (150, 3)
    assert_close(probabilities.sum(axis=1), np.ones(150))
    assert set(model.predict(features)) <= set(labels)


def test_compare_leaves_out_a_design_without_smoothing_when_the_defaults_smooth(
    extended, run, tmp_path
):
    """On a user's table the default label smoothing is on: compare then trains every design
    that takes it, says which it left out and why; naming the design is an error that says so."""
    table = tmp_path / "flowers.csv"
    table.write_bytes(IRIS.read_bytes())
    assert DESIGN_E.smoothing is None
    code, _, err = run("compare", table, "--epochs", "2", "--out", tmp_path / "r")
    assert code == 0, err
    left_out = " ".join(err.split()).split("warning: design ")[1].split(" left out: ")
    assert NEW in left_out[0].split(", ") and left_out[1].startswith("its entry has no 'smoothing'")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    takers = [name for name, entry in designs.DESIGNS.items() if entry.smoothing]
    assert list(report["designs"]) == takers and NEW not in report["designs"]
    page = " ".join((tmp_path / "r" / "report.html").read_text().split())
    assert f"{NEW} left out: its entry has no &#39;smoothing&#39; fact" in page
    code, _, err = run("compare", table, "--design", f"A{NEW}", "--epochs", "2")
    assert code == 2
    assert f"design {NEW!r} does not take label smoothing" in " ".join(err.split())
    code, _, err = run("compare", "--epochs", "2", "--out", tmp_path / "iris")  # no smoothing
    assert code == 0, err
    assert "left out" not in err
    assert NEW in json.loads((tmp_path / "iris" / "report.json").read_text())["designs"]
