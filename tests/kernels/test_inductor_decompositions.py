"""softclass's cross entropy inside torch.compile's default backend (inductor): the common small
call is decomposed into tensor ops inductor fuses (kernels/inductor_decompositions.py), with
torch's numbers and torch.compile's own out-of-range error; every other call keeps the operator."""

import pytest
import torch
import torch.nn.functional as F

import softclass.functional as S
from softclass.kernels import inductor_decompositions as decompositions


@pytest.fixture
def fresh_inductor():
    """No compiled graph from an earlier process (an FX-graph cache hit would skip the table)."""
    torch._dynamo.reset()
    with torch._inductor.config.patch(force_disable_caches=True):
        yield
    torch._dynamo.reset()


@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 4, 5)])
def test_compiled_common_call_matches_torch(fresh_inductor, shape):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=generator, dtype=torch.float64)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=generator)
    target.view(-1)[::3] = -100
    compiled = torch.compile(S.cross_entropy, fullgraph=True)
    for reduction in ("mean", "sum"):
        ours = logits.clone().requires_grad_()
        theirs = logits.clone().requires_grad_()
        loss = compiled(ours, target, reduction=reduction)
        expected = F.cross_entropy(theirs, target, reduction=reduction)
        loss.backward()
        expected.backward()
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(ours.grad, theirs.grad)


def test_compiled_out_of_range_target_raises_as_torch_compile_does(fresh_inductor):
    logits, target = torch.randn(4, 5), torch.tensor([0, 9, 1, 2])
    compiled_torch = torch.compile(F.cross_entropy, fullgraph=True)
    with pytest.raises(RuntimeError, match="index out of bounds") as theirs:
        compiled_torch(logits, target)
    compiled = torch.compile(S.cross_entropy, fullgraph=True)
    with pytest.raises(RuntimeError, match="index out of bounds") as ours:
        compiled(logits, target)
    assert type(ours.value) is type(theirs.value)


def test_other_calls_keep_the_operator_and_its_error(fresh_inductor):
    """Class weights are not decomposed: the operator runs and names the bad target."""
    compiled = torch.compile(S.cross_entropy, fullgraph=True)
    with pytest.raises(IndexError, match=r"Target 9 is out of bounds"):
        compiled(torch.randn(4, 5), torch.tensor([0, 9, 1, 2]), weight=torch.ones(5))


@pytest.mark.parametrize(
    ("logits", "target", "options"),
    [
        (torch.randn(3, 4), torch.tensor([0, 1, 2]), (torch.ones(4), -100, "mean", 0.0)),
        (torch.randn(3, 4), torch.tensor([0, 1, 2]), (None, -100, "mean", 0.1)),
        (torch.randn(3, 4), torch.tensor([0, 1, 2]), (None, -100, "none", 0.0)),
        (torch.randn(3, 4), torch.rand(3, 4), (None, -100, "mean", 0.0)),
        (
            torch.empty(1 << 11, 1 << 10),
            torch.zeros(1 << 11, dtype=torch.long),
            (None, -1, "sum", 0),
        ),
    ],
)
def test_decompositions_decline_other_calls(logits, target, options):
    assert decompositions._forward_2d(logits, target, *options, 64, False) is NotImplemented
    spatial_logits = logits.unsqueeze(-1)
    spatial_target = target.unsqueeze(-1)
    assert (
        decompositions._forward_spatial(spatial_logits, spatial_target, *options, False)
        is NotImplemented
    )


def test_dynamic_sizes_are_decomposed_too(fresh_inductor):
    """A second batch size recompiles with a symbolic one (automatic dynamic shapes): still
    decomposed (inductor's out-of-range error, not the operator's)."""
    compiled = torch.compile(S.cross_entropy, fullgraph=True)
    for rows in (6, 9):
        logits = torch.randn(rows, 5, dtype=torch.float64, requires_grad=True)
        target = torch.randint(0, 5, (rows,))
        torch.testing.assert_close(compiled(logits, target), F.cross_entropy(logits, target))
    with pytest.raises(RuntimeError, match="index out of bounds"):
        compiled(torch.randn(7, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4, 5, 0]))
