"""TensorOptimizer makes torch.optim's updates bit for bit, and shares its state layout."""

import pytest
import torch

from softclass.training.eager_optim import TensorOptimizer


def _network(dtype):
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(
        dtype
    )


def _torch_optimizer(kind, parameters, options, fused):
    if kind == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=options["learning_rate"],
            momentum=options["momentum"],
            weight_decay=options["weight_decay"],
            fused=fused,
        )
    return torch.optim.Adam(
        parameters, lr=options["learning_rate"], weight_decay=options["weight_decay"], fused=fused
    )


def _train(network, optimizer, steps, first_step=0):
    for step in range(first_step, first_step + steps):
        generator = torch.Generator().manual_seed(step)
        features = torch.randn(11, 5, generator=generator, dtype=network[0].weight.dtype)
        targets = torch.randint(0, 3, (11,), generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(network(features), targets).backward()
        optimizer.step()


OPTIONS = [
    ("sgd", {"learning_rate": 0.1, "momentum": 0.0, "weight_decay": 0.0}),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 0.0}),
    ("sgd", {"learning_rate": 0.05, "momentum": 0.5, "weight_decay": 0.01}),
    ("adam", {"learning_rate": 0.01, "momentum": 0.0, "weight_decay": 0.0}),
    ("adam", {"learning_rate": 0.003, "momentum": 0.0, "weight_decay": 0.02}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(("kind", "options"), OPTIONS)
def test_updates_equal_torch_optim_bit_for_bit(kind, options, fused, dtype):
    ours, reference = _network(dtype), _network(dtype)
    _train(ours, TensorOptimizer(ours.parameters(), kind, **options, fused=fused), steps=6)
    _train(reference, _torch_optimizer(kind, reference.parameters(), options, fused), steps=6)
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert not torch.equal(ours[0].weight, _network(dtype)[0].weight)  # it did train


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(("kind", "options"), OPTIONS)
def test_state_moves_between_torch_optim_and_ours(kind, options, fused):
    """A run resumed from a torch.optim state continues exactly, and the other way round."""
    reference = _network(torch.float32)
    reference_optimizer = _torch_optimizer(kind, reference.parameters(), options, fused)
    _train(reference, reference_optimizer, steps=3)
    ours = _network(torch.float32)
    ours.load_state_dict(reference.state_dict())
    optimizer = TensorOptimizer(ours.parameters(), kind, **options, fused=fused)
    optimizer.load_state_dict(reference_optimizer.state_dict())
    _train(ours, optimizer, steps=3, first_step=3)
    _train(reference, reference_optimizer, steps=3, first_step=3)
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    back = _torch_optimizer(kind, reference.parameters(), options, fused)
    back.load_state_dict(optimizer.state_dict())
    expected, restored = reference_optimizer.state_dict()["state"], back.state_dict()["state"]
    assert restored.keys() == expected.keys()
    assert bool(expected) == (options["momentum"] > 0 or kind == "adam")
    for index, entries in expected.items():
        for name, value in entries.items():
            torch.testing.assert_close(restored[index][name], value, rtol=0, atol=0)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(("kind", "options"), OPTIONS)
def test_state_dict_options_are_torch_optims(kind, options, fused):
    """The same option keys and values: a checkpoint of either passes the same schema check."""
    network = _network(torch.float32)
    ours = TensorOptimizer(network.parameters(), kind, **options, fused=fused)
    reference = _torch_optimizer(kind, network.parameters(), options, fused)
    assert ours.state_dict()["param_groups"] == reference.state_dict()["param_groups"]


def test_parameters_without_gradient_are_left_alone():
    network = _network(torch.float32)
    frozen = network[2].weight.detach().clone()
    optimizer = TensorOptimizer(network.parameters(), "adam", 0.1, fused=True)
    network[0](torch.randn(4, 5)).sum().backward()
    optimizer.step()
    assert torch.equal(network[2].weight, frozen)
    assert optimizer.state_dict()["state"].keys() == {0, 1}


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match=r"optimizer kind 'rmsprop': expected one of sgd, adam"):
        TensorOptimizer(_network(torch.float32).parameters(), "rmsprop", 0.1)


def test_state_for_other_tensors_is_refused():
    network = _network(torch.float32)
    optimizer = TensorOptimizer(network.parameters(), "sgd", 0.1, momentum=0.9)
    state = optimizer.state_dict()
    state["param_groups"][0]["params"] = [0, 1, 2]
    with pytest.raises(ValueError, match=r"state for 3 tensors in 1 group\(s\); .* has 4 tensors"):
        optimizer.load_state_dict(state)


def test_state_of_the_other_kind_is_refused():
    network = _network(torch.float32)
    adam = TensorOptimizer(network.parameters(), "adam", 0.1)
    _train(network, adam, steps=1)
    sgd = TensorOptimizer(network.parameters(), "sgd", 0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"tensor 0 holds \['exp_avg', .*a sgd state holds"):
        sgd.load_state_dict(adam.state_dict())
