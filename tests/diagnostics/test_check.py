import dataclasses
import functools
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from softclass import functional as sc_functional
from softclass import nn as sc_nn
from softclass.cli import app
from softclass.cli import check as check_command
from softclass.diagnostics.check import (
    LOSS_NAMES,
    Finding,
    PairingWarning,
    check_pairing,
    format_findings,
    pairing_tolerance,
    warn_findings,
)
from softclass.diagnostics.check_demo import DEMO_MISTAKES, run_demo
from softclass.errors import ConfigError
from softclass.mlp import designs

NINE_CODES = (
    "double-softmax",
    "logits-into-nll",
    "probs-into-nll",
    "log-of-softmax",
    "onehot-targets",
    "one-based-labels",
    "softmax-wrong-dim",
    "mse-broadcast",
    "unnormalized-log-probs",
)


def codes(findings):
    return [finding.code for finding in findings]


def random_batch(n_items=32, n_classes=5, scale=2.0, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(n_items, n_classes, generator=generator, dtype=torch.float64)).to(
        dtype
    )
    labels = torch.randint(0, n_classes, (n_items,), generator=generator)
    return logits, labels


def iris_logits():
    """Outputs of a freshly initialised 4-7-3 tanh network on the 150 Iris rows."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    features = torch.tensor(iris.data, dtype=torch.float32)
    features = (features - features.mean(0)) / features.std(0)
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(4, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    return network(features), torch.tensor(iris.target)


# --- the nine mistakes, each on a realistic batch -------------------------------------------


@pytest.mark.parametrize(
    "loss", ["cross_entropy", F.cross_entropy, torch.nn.CrossEntropyLoss(reduction="sum")]
)
def test_double_softmax_on_iris_batch(loss):
    logits, labels = iris_logits()
    assert check_pairing(logits, labels, loss) == []
    findings = check_pairing(F.softmax(logits, dim=1), labels, loss)
    assert codes(findings) == ["double-softmax"]
    assert findings[0].severity == "error"
    assert "rows sum to 1 within" in findings[0].seen
    assert "F.cross_entropy(logits, targets)" in findings[0].fix


def test_logits_into_nll_reports_positive_values():
    logits, labels = random_batch()
    findings = check_pairing(logits, labels, torch.nn.NLLLoss())
    n_positive = int((logits > 0).sum())
    assert codes(findings) == ["logits-into-nll"]
    assert f"{n_positive} of {logits.numel()}" in findings[0].seen


def test_probabilities_into_nll():
    logits, labels = random_batch()
    findings = check_pairing(F.softmax(logits, dim=1), labels, F.nll_loss)
    assert codes(findings) == ["probs-into-nll"]
    assert "log_softmax" in findings[0].fix


def test_log_of_softmax_underflow_is_an_error_where_log_softmax_is_fine():
    logits, labels = random_batch(scale=100.0)
    log_of_softmax = torch.log(F.softmax(logits, dim=1))
    n_neg_inf = int(torch.isneginf(log_of_softmax).sum())
    assert n_neg_inf > 0
    findings = check_pairing(log_of_softmax, labels, "nll")
    assert codes(findings) == ["log-of-softmax"]
    assert findings[0].severity == "error"
    assert f"{n_neg_inf} of {logits.numel()}" in findings[0].seen
    assert check_pairing(F.log_softmax(logits, dim=1), labels, "nll") == []


def test_log_of_softmax_seen_in_the_graph_is_a_warning_while_finite():
    logits, labels = random_batch()
    logits.requires_grad_(True)
    log_of_softmax = torch.log(F.softmax(logits, dim=1))
    findings = check_pairing(log_of_softmax, labels, "nll")
    assert codes(findings) == ["log-of-softmax"]
    assert findings[0].severity == "warning"
    assert logits.grad is None  # the checker does not run backward
    assert check_pairing(F.log_softmax(logits, dim=1), labels, "nll") == []


def test_log_of_softclass_softmax_is_seen_in_the_graph():
    logits, labels = random_batch()
    logits.requires_grad_(True)
    log_of_softmax = torch.log(sc_functional.softmax(logits, dim=1))
    assert codes(check_pairing(log_of_softmax, labels, sc_nn.NLLLoss())) == ["log-of-softmax"]


@pytest.mark.parametrize("log_softmax", [F.log_softmax, sc_functional.log_softmax])
def test_masked_log_softmax_with_graph_is_not_log_of_softmax(log_softmax):
    logits, labels = random_batch()
    logits.requires_grad_(True)
    masked = logits.masked_fill(torch.arange(5) == 4, -math.inf)
    labels = labels.clamp(max=3)
    assert check_pairing(log_softmax(masked, dim=1), labels, "nll") == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_one_hot_targets_for_nll(dtype):
    logits, labels = random_batch()
    one_hot = F.one_hot(labels, num_classes=5).to(dtype)
    findings = check_pairing(F.log_softmax(logits, dim=1), one_hot, "nll")
    assert codes(findings) == ["onehot-targets"]
    assert "argmax(dim=1)" in findings[0].fix
    assert "(32,)" in findings[0].seen


def test_long_one_hot_for_cross_entropy_but_float_probabilities_are_valid():
    logits, labels = random_batch()
    one_hot = F.one_hot(labels, num_classes=5)
    assert codes(check_pairing(logits, one_hot, "cross_entropy")) == ["onehot-targets"]
    assert check_pairing(logits, one_hot.float(), "cross_entropy") == []
    soft = F.softmax(torch.randn(32, 5), dim=1)
    assert check_pairing(logits, soft, "cross_entropy") == []


def test_dense_targets_that_are_not_one_hot_for_nll():
    logits, _ = random_batch()
    findings = check_pairing(F.log_softmax(logits, dim=1), torch.ones(32, 5), "nll")
    assert codes(findings) == ["target-shape"]


def test_index_targets_for_textbook_mcee():
    logits, labels = random_batch()
    findings = check_pairing(F.softmax(logits, dim=1), labels, "mcee")
    assert codes(findings) == ["index-targets"]
    assert "F.one_hot(targets, num_classes=5)" in findings[0].fix


@pytest.mark.parametrize(
    "loss", [sc_functional.mcee, sc_nn.MCEELoss(), sc_functional.mse_onehot, sc_nn.OneHotMSELoss()]
)
def test_softclass_probability_losses_take_indices(loss):
    logits, labels = random_batch()
    probs = F.softmax(logits, dim=1)
    assert check_pairing(probs, labels, loss) == []
    assert codes(check_pairing(probs, labels + 5, loss)) == ["labels-out-of-range"]


def test_softclass_mcee_and_mse_onehot_take_indices():
    def mcee(probs, targets):
        return probs

    mcee.__module__ = "softclass.functional"
    logits, labels = random_batch()
    probs = F.softmax(logits, dim=1)
    assert check_pairing(probs, labels, mcee) == []
    assert check_pairing(probs, labels, "mse_onehot") == []
    assert codes(check_pairing(probs, labels + 5, mcee)) == ["labels-out-of-range"]


@pytest.mark.parametrize("loss", ["cross_entropy", "nll"])
def test_one_based_labels(loss):
    logits, labels = random_batch()
    labels[0] = 4
    outputs = logits if loss == "cross_entropy" else F.log_softmax(logits, dim=1)
    findings = check_pairing(outputs, labels + 1, loss)
    assert codes(findings) == ["one-based-labels"]
    assert "targets - 1" in findings[0].fix


def test_negative_labels_but_not_the_ignore_index():
    logits, labels = random_batch()
    labels[3] = -100
    assert check_pairing(logits, labels, "cross_entropy") == []
    labels[5] = -1
    findings = check_pairing(logits, labels, "cross_entropy")
    assert codes(findings) == ["negative-labels"]
    assert "1 class indices are negative (smallest -1)" in findings[0].seen
    assert check_pairing(logits, labels, torch.nn.CrossEntropyLoss(ignore_index=-1)) != []
    labels[3] = 0
    assert check_pairing(logits, labels, torch.nn.CrossEntropyLoss(ignore_index=-1)) == []
    assert check_pairing(logits, labels, "cross_entropy", ignore_index=-1) == []


def test_labels_out_of_range_reports_the_largest():
    logits, labels = random_batch()
    labels[2] = 7
    findings = check_pairing(logits, labels, "cross_entropy")
    assert codes(findings) == ["labels-out-of-range"]
    assert "largest 7" in findings[0].seen
    assert "at least 8 outputs" in findings[0].fix


def test_float_class_indices():
    logits, labels = random_batch()
    findings = check_pairing(logits, labels.float(), "cross_entropy")
    assert codes(findings) == ["float-labels"]
    assert ".long()" in findings[0].fix
    halves = check_pairing(logits, labels.float() + 0.5, "cross_entropy")
    assert codes(halves) == ["float-labels"]
    assert "not whole numbers" in halves[0].seen
    labels[0] = 4
    one_based = check_pairing(F.log_softmax(logits, dim=1), (labels + 1).double(), "nll")
    assert codes(one_based) == ["float-labels", "one-based-labels"]


def test_int32_class_indices():
    logits, labels = random_batch()
    assert codes(check_pairing(logits, labels.int(), "cross_entropy")) == ["label-dtype"]
    assert check_pairing(logits, labels.to(torch.uint8), "cross_entropy") == []


def test_column_targets_need_a_squeeze():
    logits, labels = random_batch()
    findings = check_pairing(logits, labels.unsqueeze(1), "cross_entropy")
    assert codes(findings) == ["target-shape"]
    assert "squeeze(1)" in findings[0].fix


@pytest.mark.parametrize("loss", ["cross_entropy", "nll", "mse", "mcee"])
def test_softmax_over_the_batch_dimension(loss):
    logits, labels = random_batch()
    targets = labels if loss in ("cross_entropy", "nll") else F.one_hot(labels, 5).float()
    findings = check_pairing(F.softmax(logits, dim=0), targets, loss)
    assert codes(findings) == ["softmax-wrong-dim"]
    assert "dim 0 (size 32)" in findings[0].seen


def test_softmax_over_the_last_dimension_of_per_position_outputs():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 5, 6, generator=generator)
    labels = torch.randint(0, 5, (4, 6), generator=generator)
    assert check_pairing(logits, labels, "cross_entropy") == []
    findings = check_pairing(F.log_softmax(logits, dim=2).exp(), labels, "cross_entropy")
    assert codes(findings) == ["softmax-wrong-dim"]
    assert "dim 2 (size 6)" in findings[0].seen


@pytest.mark.parametrize(
    ("n_items", "column", "consequence"),
    [(5, False, "N == C"), (5, True, "every column"), (8, False, "raises a size mismatch")],
)
def test_mse_with_index_targets(n_items, column, consequence):
    logits, labels = random_batch(n_items=n_items)
    targets = labels.float().unsqueeze(1) if column else labels
    for loss in ("mse", F.mse_loss, torch.nn.MSELoss()):
        findings = check_pairing(F.softmax(logits, dim=1), targets, loss)
        assert codes(findings) == ["mse-broadcast"]
        assert consequence in findings[0].seen


def test_published_log_probabilities_do_not_normalize():
    published = torch.tensor([[-1.6563, -1.7563, -1.5563]])
    findings = check_pairing(published, torch.tensor([2]), "nll")
    assert codes(findings) == ["unnormalized-log-probs"]
    assert "-0.5544" in findings[0].seen  # SPEC: its logsumexp is -0.5544, not 0
    expected = torch.logsumexp(published.double(), dim=1).item()
    assert f"{expected:.4f}" in findings[0].seen


def test_hand_rounded_log_probabilities_are_close_enough():
    rounded = torch.tensor([[-1.4076, -0.4076, -2.4076]])  # SPEC's log-softmax of (2.5, 3.5, 1.5)
    assert check_pairing(rounded, torch.tensor([1]), "nll") == []


# --- other findings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_outputs", "fix_part"),
    [(lambda z: z, "F.softmax(logits, dim=1)"), (lambda z: F.log_softmax(z, dim=1), ".exp()")],
)
@pytest.mark.parametrize("loss", ["mse", "mcee"])
def test_probability_losses_need_probabilities(make_outputs, fix_part, loss):
    logits, labels = random_batch()
    findings = check_pairing(make_outputs(logits), F.one_hot(labels, 5).float(), loss)
    assert codes(findings) == ["not-probabilities"]
    assert fix_part in findings[0].fix


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_outputs(bad):
    logits, labels = random_batch()
    logits[1, 2] = bad
    findings = check_pairing(logits, labels, "cross_entropy")
    assert codes(findings) == ["non-finite-outputs"]


def test_minus_inf_logits_are_a_valid_mask_for_cross_entropy():
    logits, labels = random_batch()
    logits[:, 4] = -math.inf
    assert check_pairing(logits, labels.clamp(max=3), "cross_entropy") == []


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_single_class_outputs(loss):
    findings = check_pairing(torch.randn(6, 1), torch.zeros(6, dtype=torch.long), loss)
    assert codes(findings) == ["single-class"]
    assert findings[0].severity == "warning"


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_empty_batch_has_nothing_to_report(loss):
    assert check_pairing(torch.empty(0, 3), torch.empty(0, dtype=torch.long), loss) == []


def test_one_item_without_batch_dimension():
    logits = torch.tensor([2.5, 3.5, 1.5])
    target = torch.tensor(1)
    assert check_pairing(logits, target, "cross_entropy") == []
    assert check_pairing(F.log_softmax(logits, dim=0), target, "nll") == []
    assert check_pairing(F.softmax(logits, dim=0), torch.tensor([0.0, 1, 0]), "mse") == []
    softmaxed = check_pairing(F.softmax(logits, dim=0), target, "cross_entropy")
    assert codes(softmaxed) == ["double-softmax"]


def test_targets_of_another_shape():
    logits, labels = random_batch()
    findings = check_pairing(logits, labels[:-1], "cross_entropy")
    assert codes(findings) == ["shape-mismatch"]
    assert "(31,)" in findings[0].seen and "(32,)" in findings[0].seen


def test_outputs_and_targets_are_left_untouched():
    logits, labels = random_batch()
    logits.requires_grad_(True)
    outputs = F.softmax(logits, dim=1)
    before = outputs.detach().clone()
    check_pairing(outputs, labels, "cross_entropy")
    assert torch.equal(outputs.detach(), before)
    assert outputs.requires_grad and logits.grad is None


# --- loss resolution and argument errors ----------------------------------------------------


class NLLLoss(torch.nn.Module):  # stands for softclass.nn.NLLLoss: resolved by its class name
    ignore_index = -100


class MCEELoss(torch.nn.Module):
    pass


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        ("cross_entropy", "double-softmax"),
        ("CrossEntropyLoss", "double-softmax"),
        (F.cross_entropy, "double-softmax"),
        (torch.nn.CrossEntropyLoss(), "double-softmax"),
        (torch.nn.CrossEntropyLoss, "double-softmax"),
        (functools.partial(F.cross_entropy, reduction="sum"), "double-softmax"),
        ("nll", "probs-into-nll"),
        ("nll_loss", "probs-into-nll"),
        (F.nll_loss, "probs-into-nll"),
        (torch.nn.NLLLoss(), "probs-into-nll"),
        (NLLLoss(), "probs-into-nll"),
        (sc_functional.cross_entropy, "double-softmax"),
        (sc_nn.CrossEntropyLoss(), "double-softmax"),
        (sc_functional.nll_loss, "probs-into-nll"),
        (sc_nn.NLLLoss(), "probs-into-nll"),
    ],
)
def test_loss_is_recognised_by_name(loss, expected):
    logits, labels = random_batch()
    assert codes(check_pairing(F.softmax(logits, dim=1), labels, loss)) == [expected]


@pytest.mark.parametrize(
    "loss",
    [
        "mse",
        F.mse_loss,
        torch.nn.MSELoss(),
        "mcee",
        MCEELoss(),
        sc_functional.mse_onehot,
        sc_nn.OneHotMSELoss(),
        sc_functional.mcee,
        sc_nn.MCEELoss(),
    ],
)
def test_probability_losses_are_recognised_by_name(loss):
    logits, labels = random_batch()
    assert codes(check_pairing(logits, F.one_hot(labels, 5).float(), loss)) == ["not-probabilities"]


@pytest.mark.parametrize("loss", ["hinge", F.binary_cross_entropy, torch.nn.L1Loss()])
def test_unknown_loss_is_named_with_the_accepted_ones(loss):
    logits, labels = random_batch()
    with pytest.raises(ValueError, match=r"unknown loss .*'cross_entropy', 'nll', 'mse', 'mcee'"):
        check_pairing(logits, labels, loss)


def test_non_tensor_arguments():
    logits, labels = random_batch()
    with pytest.raises(TypeError, match=r"outputs must be a torch.Tensor, got list"):
        check_pairing(logits.tolist(), labels, "nll")
    with pytest.raises(TypeError, match=r"targets must be a torch.Tensor, got ndarray"):
        check_pairing(logits, labels.numpy(), "nll")


@pytest.mark.parametrize("outputs", [torch.tensor(0.5), torch.zeros(4, 3, dtype=torch.long)])
def test_outputs_must_be_float_with_a_class_dimension(outputs):
    with pytest.raises(ValueError, match="outputs must be a floating-point tensor"):
        check_pairing(outputs, torch.zeros(4, dtype=torch.long), "cross_entropy")


# --- findings and warnings ------------------------------------------------------------------


def test_finding_is_frozen_and_prints_on_one_line():
    finding = Finding("double-softmax", "error", "seen this.", "Do that.")
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.code = "other"
    assert str(finding) == "[error] double-softmax: seen this. Fix: Do that."


def test_warn_findings_issues_one_pairing_warning():
    logits, labels = random_batch()
    findings = check_pairing(F.softmax(logits, dim=1), labels.float(), "nll")
    assert codes(findings) == ["probs-into-nll", "float-labels"]
    with pytest.warns(PairingWarning) as caught:
        warn_findings(findings)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message == format_findings(findings)
    assert "2 problems" in message and "probs-into-nll" in message and "float-labels" in message
    assert caught[0].filename == __file__


def test_warn_findings_is_silent_without_findings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_findings([])


# --- no false positives on the four correct designs ------------------------------------------


def make_design(design, n_items, n_classes, extra_dim, scale, seed, dtype):
    generator = torch.Generator().manual_seed(seed)
    shape = (n_items, n_classes) + ((extra_dim,) if extra_dim else ())
    logits = (scale * torch.randn(shape, generator=generator, dtype=torch.float64)).to(dtype)
    index_shape = (n_items,) + ((extra_dim,) if extra_dim else ())
    labels = torch.randint(0, n_classes, index_shape, generator=generator)
    one_hot = F.one_hot(labels, n_classes).movedim(-1, 1).to(dtype)
    if design == "A":
        return logits, labels, "cross_entropy"
    if design == "B":
        return F.log_softmax(logits, dim=1), labels, "nll"
    return F.softmax(logits, dim=1), one_hot, "mse" if design == "C" else "mcee"


@pytest.mark.parametrize("design", sorted(designs.DESIGNS.values(), key=lambda d: d.name))
@pytest.mark.parametrize("by_name", [True, False])
def test_project_designs_pass(design, by_name):
    logits, labels = iris_logits()
    outputs = design.output(logits)
    targets = design.encode_targets(labels, 3)
    loss = design.loss_name if by_name else design.loss
    assert check_pairing(outputs, targets, loss) == []


@settings(max_examples=400, deadline=None)
@given(
    design=st.sampled_from("ABCD"),
    n_items=st.integers(1, 64),
    n_classes=st.integers(2, 40),
    extra_dim=st.sampled_from([0, 0, 0, 1, 3]),
    log10_scale=st.floats(-3, 3),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_correct_designs_never_warn(
    design, n_items, n_classes, extra_dim, log10_scale, seed, dtype
):
    outputs, targets, loss = make_design(
        design, n_items, n_classes, extra_dim, 10.0**log10_scale, seed, dtype
    )
    assert check_pairing(outputs, targets, loss) == []


@settings(max_examples=100, deadline=None)
@given(
    n_items=st.integers(1, 64),
    n_classes=st.integers(2, 40),
    log10_scale=st.floats(-3, 3),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
)
def test_softmax_outputs_are_always_recognised(n_items, n_classes, log10_scale, seed, dtype):
    logits, labels = random_batch(n_items, n_classes, 10.0**log10_scale, seed, dtype)
    probs = F.softmax(logits, dim=1)
    assert codes(check_pairing(probs, labels, "cross_entropy")) == ["double-softmax"]
    assert codes(check_pairing(probs, labels, "nll")) == ["probs-into-nll"]


@pytest.mark.parametrize("n_classes", [1000, 20000])
@pytest.mark.parametrize("log10_scale", [-3, 0, 1, 3])
def test_tolerance_holds_for_many_classes(n_classes, log10_scale):
    logits, labels = random_batch(8, n_classes, 10.0**log10_scale)
    probs = F.softmax(logits, dim=1)
    deviation = (probs.double().sum(dim=1) - 1).abs().max().item()
    assert deviation <= pairing_tolerance(torch.float32, n_classes)
    assert codes(check_pairing(probs, labels, "cross_entropy")) == ["double-softmax"]
    assert check_pairing(F.log_softmax(logits, dim=1), labels, "nll") == []


def test_tolerance_scales_with_dtype_and_classes():
    assert pairing_tolerance(torch.float64, 3) == pairing_tolerance(torch.float32, 3)
    assert pairing_tolerance(torch.bfloat16, 3) > pairing_tolerance(torch.float16, 3)
    assert pairing_tolerance(torch.float32, 6400) == 10 * pairing_tolerance(torch.float32, 64)


# --- the demo and the command line ------------------------------------------------------------


def test_demo_makes_each_of_the_nine_mistakes_and_the_checker_catches_it():
    results = run_demo()
    assert tuple(mistake.code for mistake, _ in results) == NINE_CODES
    for mistake, findings in results:
        assert mistake.code in codes(findings), mistake.title
    assert len(DEMO_MISTAKES) == 9


def test_cli_check_demo_prints_every_mistake():
    result = CliRunner().invoke(app, ["check", "--demo"], terminal_width=100)
    assert result.exit_code == 0, result.output
    for code in NINE_CODES:
        assert code in result.output
    assert "F.cross_entropy(F.softmax(logits, dim=1), labels)" in result.output


def test_cli_check_demo_json():
    result = CliRunner().invoke(app, ["check", "--demo", "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert [record["mistake"] for record in records] == list(NINE_CODES)
    assert all(record["findings"] for record in records)


def test_cli_check_without_demo_explains_what_is_missing():
    result = CliRunner().invoke(app, ["check"])
    assert isinstance(result.exception, ConfigError)
    with pytest.raises(ConfigError, match=r"needs MODEL_DIR and DATA .* or --demo"):
        check_command(model_dir=None, data=None, demo=False, json_output=False)
