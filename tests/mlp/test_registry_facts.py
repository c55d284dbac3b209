"""Each registry entry owns its facts: an entry missing one is refused when it is made, and every
per-entry table (agreement pairs, loss labels, styles, option checks) is derived from it."""

import dataclasses

import pytest
from sklearn.utils._param_validation import InvalidParameterError

from softclass import Classifier
from softclass.errors import ConfigError, OptionError
from softclass.mlp import designs
from softclass.mlp.activations import ACTIVATIONS, register_activation
from softclass.mlp.designs import (
    DESIGNS,
    REFERENCE,
    RELATIONS,
    agreement_pairs,
    register_design,
)
from softclass.mlp.optimizers import (
    DEFAULTS,
    MAX_OPTIMIZER_PARAMS,
    OPTIMIZERS,
    register_optimizer,
)
from softclass.option_table import Rule, options_of
from softclass.training.config import TrainConfig

DESIGN_FACTS = ("title", "loss_name", "label", "color", "linestyle", "relation", "meaning")


@pytest.mark.parametrize("fact", DESIGN_FACTS)
def test_a_design_without_a_fact_is_refused_naming_it(fact):
    with pytest.raises(ConfigError, match=f"design 'Z': fact '{fact}' is missing"):
        dataclasses.replace(DESIGNS["B"], name="Z", **{fact: ""})


@pytest.mark.parametrize(
    ("facts", "match"),
    [
        ({"name": "ZZ"}, r"design name 'ZZ': expected one capital letter"),
        ({"relation": "similar"}, r"fact 'relation' is 'similar', expected one of reference, same"),
        ({"color": "purple"}, r"fact 'color' is 'purple', expected #rrggbb"),
        ({"linestyle": "~"}, r"fact 'linestyle' is '~', expected -, --, : or -\."),
        ({"target_encoding": "dense"}, r"fact 'target_encoding' is 'dense', expected 'index'"),
    ],
)
def test_a_design_with_a_wrong_fact_is_refused(facts, match):
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(DESIGNS["B"], **{"name": "Z", **facts})


def test_registration_refuses_a_taken_name_and_a_second_reference():
    with pytest.raises(ConfigError, match="design 'B' is already registered"):
        register_design(DESIGNS["B"])
    with pytest.raises(ConfigError, match="only the reference design A has relation 'reference'"):
        register_design(dataclasses.replace(DESIGNS["A"], name="Z"))
    assert "Z" not in DESIGNS
    with pytest.raises(ConfigError, match="activation 'tanh' is already registered"):
        register_activation(ACTIVATIONS["tanh"])
    with pytest.raises(ConfigError, match="optimizer 'sgd' is already registered"):
        register_optimizer(OPTIMIZERS["sgd"])


def test_a_design_whose_loss_the_pairing_checker_cannot_place_is_refused():
    def focal(output, targets, reduction="mean"):
        return output.sum()

    entry = dataclasses.replace(
        DESIGNS["C"], name="Z", loss=focal, loss_name="focal", smoothing=None
    )
    with pytest.raises(
        ConfigError,
        match=r"design 'Z': fact 'loss' \(<function .*focal.*, loss name 'focal'\) is no loss "
        "the pairing checker knows",
    ):
        register_design(entry)
    assert "Z" not in DESIGNS


def test_a_new_loss_name_is_checked_through_the_designs_loss_function():
    """A design named its loss afresh ("smoothed_ce") but built it on softclass.functional's
    cross entropy: training's pairing check knows it from the function, and flags softmax
    outputs fed to it as it does for cross_entropy."""
    import functools

    import torch

    from softclass import functional
    from softclass.diagnostics.check import check_pairing

    smoothed = functools.partial(functional.cross_entropy, label_smoothing=0.1)
    entry = dataclasses.replace(
        DESIGNS["A"], name="Z", loss=smoothed, loss_name="smoothed_ce", relation="another loss"
    )
    register_design(entry)
    try:
        logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
        targets = torch.arange(8) % 3
        assert check_pairing(logits, targets, "smoothed_ce") == []
        both = check_pairing(torch.softmax(logits, 1), targets, "smoothed_ce")
        assert both == check_pairing(torch.softmax(logits, 1), targets, "cross_entropy") != []
        with pytest.raises(
            ValueError,
            match=r"unknown loss 'hinge' \(name 'hinge'\); expected one of 'cross_entropy', "
            r".*'smoothed_ce'",
        ):
            check_pairing(logits, targets, "hinge")
    finally:
        del DESIGNS["Z"]


def test_agreement_pairs_follow_each_designs_relation(monkeypatch):
    assert DESIGNS[REFERENCE].relation == "reference"
    pairs = agreement_pairs()
    assert sorted(second for _, second in pairs) == sorted(set(DESIGNS) - {REFERENCE})
    assert {first for first, _ in pairs} == {REFERENCE}
    order = [RELATIONS.index(DESIGNS[second].relation) for _, second in pairs]
    assert order == sorted(order)  # closest expected agreement first
    assert pairs.index(("A", "B")) < pairs.index(("A", "D")) < pairs.index(("A", "C"))
    assert [DESIGNS[name].same_loss_quantity for name in "BDC"] == [True, True, False]
    extra = dataclasses.replace(DESIGNS["D"], name="Z", relation="same computation")
    monkeypatch.setitem(designs.DESIGNS, "Z", extra)
    assert agreement_pairs()[:2] == (("A", "B"), ("A", "Z"))


def test_every_design_has_its_own_label_and_style():
    labels = [design.label for design in DESIGNS.values()]
    styles = [(design.color, design.linestyle) for design in DESIGNS.values()]
    assert len(set(labels)) == len(labels) and len(set(styles)) == len(styles)


@pytest.mark.parametrize(
    ("facts", "match"),
    [
        ({"title": ""}, "optimizer 'sgd': fact 'title' is missing"),
        ({"n_moments": 3}, "fact 'n_moments' is 3, expected 0, 1 or 2"),
        ({"native_params": ()}, "fact 'native_params' is missing"),
        ({"native_params": ("learning_rate", "tau")}, r"native_params' is .*'tau'.*expected at"),
        ({"native_params": ("eps",) * (MAX_OPTIMIZER_PARAMS + 1)}, "expected at most 8 of"),
    ],
)
def test_an_optimizer_without_a_fact_is_refused_naming_it(facts, match):
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(OPTIMIZERS["sgd"], **facts)


def test_an_activation_without_a_fact_is_refused_naming_it():
    with pytest.raises(ConfigError, match="activation 'tanh': fact 'backward' is missing"):
        dataclasses.replace(ACTIVATIONS["tanh"], backward=None)


def test_the_compiled_loops_receive_each_optimizers_hyper_parameters_in_its_order():
    params = dataclasses.replace(DEFAULTS, learning_rate=0.5, betas=(0.8, 0.7), nesterov=True)
    assert OPTIMIZERS["sgd"].native_values(params) == [0.5, 0.0, 0.9, 1.0]
    assert OPTIMIZERS["adam"].native_values(params) == [0.5, 0.0, 0.8, 0.7, 1e-8]


@pytest.mark.parametrize(
    ("rule", "value", "match"),
    [
        (Rule("integer", low=1), True, r"^x=True must be an integer ≥ 1$"),
        (Rule("number", low_open=True), -1, r"^x=-1 must be a number ≥ 0$"),
        (Rule("number", high=1, note=" (0 = none)"), 1.5, r"^x=1.5 must lie in \[0, 1\) \(0 = "),
        (Rule("flag"), 1, r"^x=1 must be True or False$"),
        (Rule("pair", high=1), "ab", r"^x='ab' must be two numbers in \[0, 1\)$"),
        (Rule("choice", choices=lambda: ("a", "b")), "c", r"^x='c': expected one of a, b$"),
    ],
)
def test_a_rule_names_the_value_and_what_it_accepts(rule, value, match):
    with pytest.raises(OptionError, match=match):
        rule.check("x", value)


def test_every_training_option_is_declared_once_with_its_flag():
    declared = options_of(TrainConfig)
    assert set(declared) == {item.name for item in dataclasses.fields(TrainConfig)}
    flags = [option.flag for option in declared.values()]
    assert len(set(flags)) == len(flags)


@pytest.mark.parametrize(
    ("parameter", "value"),
    [("learning_rate_init", 0.0), ("alpha", -1.0), ("tol", -1.0), ("solver", "no-such-optimizer")],
)
def test_the_estimators_checks_come_from_the_option_table(parameter, value):
    aliases = {option.sklearn for option in options_of(TrainConfig).values()} - {None}
    assert parameter in aliases
    assert aliases <= set(Classifier().get_params())
    with pytest.raises(InvalidParameterError, match=f"The '{parameter}' parameter of Classifier"):
        Classifier(**{parameter: value}).fit([[0.0], [1.0]], [0, 1])
