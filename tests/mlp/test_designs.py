"""The four designs: outputs, losses, probabilities; A and B are the same computation."""

import pytest
import torch
from torch.testing import assert_close

from softclass import functional as S
from softclass.errors import ConfigError
from softclass.mlp.designs import DESIGNS, get_design
from softclass.mlp.model import MLPConfig, build_mlp


def _batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(12, 5, generator=generator, dtype=torch.float64), torch.randint(
        0, 5, (12,), generator=generator
    )


@pytest.mark.parametrize("name", list(DESIGNS))
def test_probabilities_are_softmax_of_logits(name):
    logits, _ = _batch()
    design = get_design(name)
    assert_close(design.predict_proba(logits), S.softmax(logits, 1))
    assert_close(design.predict_log_proba(logits), S.log_softmax(logits, 1))


def test_designs_a_b_d_share_the_loss_and_c_differs():
    logits, targets = _batch()
    losses = {}
    for name, design in DESIGNS.items():
        encoded = design.encode_targets(targets, 5)
        losses[name] = design.loss_from_logits(logits, encoded)
    assert_close(losses["A"], losses["B"], rtol=0, atol=1e-15)
    assert_close(losses["A"], losses["D"])
    assert abs(losses["A"] - losses["C"]) > 0.1
    expected_c = ((S.softmax(logits, 1) - S.one_hot(targets, 5, torch.float64)) ** 2).sum(1).mean()
    assert_close(losses["C"], expected_c)


def test_a_and_b_give_identical_gradients():
    logits, targets = _batch(1)
    grads = []
    for name in "AB":
        leaf = logits.clone().requires_grad_()
        design = get_design(name)
        design.loss_from_logits(leaf, design.encode_targets(targets, 5)).backward()
        grads.append(leaf.grad)
    assert_close(grads[0], grads[1], rtol=0, atol=1e-15)


def test_target_encoding():
    targets = torch.tensor([2, 0])
    assert get_design("a").encode_targets(targets, 3) is targets
    assert get_design("C").encode_targets(targets, 3).tolist() == [[0, 0, 1], [1, 0, 0]]


def test_unknown_design_lists_the_valid_ones():
    listed = ", ".join(DESIGNS)
    with pytest.raises(
        ConfigError, match=rf"unknown design 'no-such-design': expected one of {listed} \(A = "
    ):
        get_design("no-such-design")


def test_same_seed_same_weights_and_global_rng_untouched():
    config = MLPConfig(n_features=4, n_classes=3)
    before = torch.random.get_rng_state()
    first, second = build_mlp(config, 3), build_mlp(config, 3)
    assert torch.equal(torch.random.get_rng_state(), before)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    other = build_mlp(config, 4)
    assert not torch.equal(next(first.parameters()), next(other.parameters()))
    assert first(torch.zeros(2, 4)).shape == (2, 3)
    assert [p.shape for p in first.parameters()] == [(7, 4), (7,), (3, 7), (3,)]


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"n_features": 0, "n_classes": 3}, r"at least 1 feature"),
        ({"n_features": 4, "n_classes": 3, "hidden": (7, 0)}, r"positive integers, got \(7, 0\)"),
        (
            {"n_features": 4, "n_classes": 3, "activation": "no-such-activation"},
            r"unknown activation 'no-such-activation'",
        ),
    ],
)
def test_bad_model_config(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        MLPConfig(**kwargs)


def test_config_round_trip():
    config = MLPConfig(n_features=4, n_classes=3, hidden=(8, 6), activation="relu")
    assert MLPConfig.from_dict(config.to_dict()) == config
