"""The optimizer registry's ``batched_step`` makes torch.optim's updates bit for bit, for every
entry of :data:`softclass.mlp.optimizers.OPTIMIZERS` (a new entry is tested without being listed
here), and runs without importing ``torch._dynamo``."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch_reference import torch_optimizer

from softclass.errors import ConfigError
from softclass.mlp.optimizers import OPTIMIZERS, BatchedState, OptimizerParams, get_optimizer

# Hyper-parameter sets applied to every optimizer (each reads the ones it uses): plain, momentum
# with weight decay, Nesterov momentum with weight decay, Adam's rates away from their defaults.
PARAMS = {
    "plain": OptimizerParams(learning_rate=0.1, momentum=0.0),
    "momentum+wd": OptimizerParams(learning_rate=0.05, momentum=0.9, weight_decay=0.01),
    "nesterov+wd": OptimizerParams(
        learning_rate=0.05, momentum=0.5, nesterov=True, weight_decay=0.02
    ),
    "betas+eps+wd": OptimizerParams(
        learning_rate=0.003, momentum=0.0, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.02
    ),
}
STEPS = 6


def _network(dtype):
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(
        dtype
    )


def _backward(network, step, use_last_layer=True):
    """Gradients of a seeded batch's loss; without the last layer, its tensors get no gradient."""
    generator = torch.Generator().manual_seed(step)
    features = torch.randn(11, 5, generator=generator, dtype=network[0].weight.dtype)
    targets = torch.randint(0, 3, (11,), generator=generator)
    network.zero_grad()
    if use_last_layer:
        torch.nn.functional.cross_entropy(network(features), targets).backward()
    else:
        network[1](network[0](features)).square().mean().backward()


def _registry_step(name, network, state, params):
    """What the Trainer does: step the parameters that have a gradient, through the registry."""
    parameters = list(network.parameters())
    indices = [index for index, tensor in enumerate(parameters) if tensor.grad is not None]
    subset = state.subset(indices)
    with torch.no_grad():
        get_optimizer(name).batched_step(
            [parameters[index] for index in indices],
            [parameters[index].grad for index in indices],
            subset,
            params,
        )
    state.step_count = subset.step_count


def _assert_bitwise_equal(ours, reference):
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("params", list(PARAMS.values()), ids=list(PARAMS))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_updates_equal_torch_optim_bit_for_bit(name, params, dtype):
    ours, reference = _network(dtype), _network(dtype)
    state = get_optimizer(name).new_state(list(ours.parameters()))
    optimizer = torch_optimizer(name, reference.parameters(), params, fused=True)
    for step in range(STEPS):
        _backward(ours, step)
        _registry_step(name, ours, state, params)
        _backward(reference, step)
        optimizer.step()
    _assert_bitwise_equal(ours, reference)
    assert state.step_count == STEPS
    assert not torch.equal(ours[0].weight, _network(dtype)[0].weight)  # it did train


@pytest.mark.parametrize("params", list(PARAMS.values()), ids=list(PARAMS))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_updates_are_torch_optims_default_implementation_up_to_rounding(name, params):
    """torch.optim's for-each kernels round differently from its fused ones; in float64 the
    registry stays within rounding of them too (the autograd reference of
    tests/training/test_engine.py)."""
    ours, reference = _network(torch.float64), _network(torch.float64)
    state = get_optimizer(name).new_state(list(ours.parameters()))
    optimizer = torch_optimizer(name, reference.parameters(), params, fused=False)
    for step in range(STEPS):
        _backward(ours, step)
        _registry_step(name, ours, state, params)
        _backward(reference, step)
        optimizer.step()
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("params", list(PARAMS.values()), ids=list(PARAMS))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_parameters_without_gradient_are_left_alone_as_torch_optim_does(name, params):
    """The last layer gets no gradient on the first two steps: torch.optim skips it (its state
    starts later, its Adam step count lags); the registry, stepping the subset, does the same.
    torch 2.13's fused SGD with momentum fails on a missing gradient, so SGD is held to the
    for-each form (within float64 rounding), the others to the fused one (bit for bit)."""
    fused = name != "sgd"
    ours, reference = _network(torch.float64), _network(torch.float64)
    state = get_optimizer(name).new_state(list(ours.parameters()))
    optimizer = torch_optimizer(name, reference.parameters(), params, fused=fused)
    frozen = ours[2].weight.detach().clone()
    for step in range(STEPS):
        for network in (ours, reference):
            _backward(network, step, use_last_layer=step >= 2)
        _registry_step(name, ours, state, params)
        optimizer.step()
        if step == 1:
            assert torch.equal(ours[2].weight, frozen)
    tolerance = 0 if fused else 1e-13
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=tolerance, atol=tolerance)
    assert state.step_count == STEPS
    if get_optimizer(name).n_moments == 2:  # Adam's per-tensor step counts
        assert [float(count) for count in state.step_counts] == [6.0, 6.0, 4.0, 4.0]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_new_state_is_zero_and_shaped_as_the_parameters(name):
    parameters = [torch.ones(2, 3, 4, dtype=torch.float64), torch.ones(2, 5)]
    optimizer = get_optimizer(name)
    state = optimizer.new_state(parameters)
    assert isinstance(state, BatchedState) and state.step_count == 0
    moments = state.first_moments + state.second_moments
    assert len(moments) == optimizer.n_moments * len(parameters)
    assert [tensor.shape for tensor in moments] == [tensor.shape for tensor in parameters] * (
        optimizer.n_moments
    )
    assert all(tensor.dtype == parameters[i % 2].dtype for i, tensor in enumerate(moments))
    assert all(not tensor.any() for tensor in moments)
    assert [(count.shape, count.dtype) for count in state.step_counts] == [
        ((), torch.float32)
    ] * len(parameters)


def test_a_subset_shares_the_tensors():
    state = get_optimizer("adam").new_state([torch.ones(2), torch.ones(3), torch.ones(4)])
    state.step_count = 5
    subset = state.subset([0, 2])
    assert subset.step_count == 5
    assert subset.first_moments[1] is state.first_moments[2]
    assert subset.second_moments[0] is state.second_moments[0]
    assert subset.step_counts[1] is state.step_counts[2]
    assert get_optimizer("sgd").new_state([torch.ones(2)]).subset([0]).second_moments == []


def test_an_unknown_name_lists_the_registry():
    with pytest.raises(
        ConfigError,
        match=f"unknown optimizer 'no-such-optimizer': expected one of {', '.join(OPTIMIZERS)}$",
    ):
        get_optimizer("no-such-optimizer")


def test_every_entry_has_a_torch_optim_reference():
    """A new entry fails here (and in the tests above) until tests/torch_reference.py knows it."""
    for name in OPTIMIZERS:
        assert isinstance(
            torch_optimizer(name, [torch.ones(1)], OptimizerParams()), torch.optim.Optimizer
        )
    with pytest.raises(
        KeyError, match=r"registry optimizer 'no-such-optimizer' has no torch\.optim"
    ):
        torch_optimizer("no-such-optimizer", [torch.ones(1)], OptimizerParams())


def test_stepping_every_optimizer_does_not_import_torch_dynamo():
    script = textwrap.dedent(
        """
        import sys
        import torch
        from softclass.mlp.optimizers import OPTIMIZERS, OptimizerParams
        parameters = [torch.randn(7, 5, requires_grad=True), torch.randn(7, requires_grad=True)]
        for optimizer in OPTIMIZERS.values():
            for params in (OptimizerParams(), OptimizerParams(nesterov=True, weight_decay=0.1)):
                state = optimizer.new_state(parameters)
                with torch.no_grad():
                    for _ in range(2):
                        gradients = [torch.ones_like(tensor) for tensor in parameters]
                        optimizer.batched_step(parameters, gradients, state, params)
        print(sorted(OPTIMIZERS), "torch._dynamo" in sys.modules)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-1] == "False"
    assert run.stdout.startswith(str(sorted(OPTIMIZERS)))
