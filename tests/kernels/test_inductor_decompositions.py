"""softclass's cross entropy inside torch.compile's default backend (inductor): the common small
call is decomposed into tensor ops inductor fuses (kernels/inductor_decompositions.py), with
torch's numbers and torch.compile's own out-of-range error; every other call keeps the operator."""

import operator

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
    assert decompositions._forward(logits, target, *options, 64, False) is NotImplemented
    spatial_logits = logits.unsqueeze(-1)
    spatial_target = target.unsqueeze(-1)
    assert (
        decompositions._forward(spatial_logits, spatial_target, *options, False) is NotImplemented
    )


def test_dynamic_sizes_are_decomposed_too(fresh_inductor):
    """A second batch size recompiles with a symbolic one (automatic dynamic shapes): still
    decomposed (inductor's out-of-range error, not the operator's)."""
    compiled = torch.compile(S.cross_entropy, fullgraph=True)
    for rows in (6, 9):
        logits = torch.randn(rows, 5, dtype=torch.float64, requires_grad=True)
        target = torch.randint(0, 5, (rows,))
        target[::4] = -100  # ignored items: no gradient
        loss = compiled(logits, target)
        (gradient,) = torch.autograd.grad(loss, logits)
        expected = F.cross_entropy(logits, target)
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(gradient, torch.autograd.grad(expected, logits)[0])
    with pytest.raises(RuntimeError, match="index out of bounds"):
        compiled(torch.randn(7, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4, 5, 0]))


@pytest.mark.parametrize(
    ("logits", "calls"),
    [
        (torch.randn(8, 5), ["softclass.cross_entropy"]),
        # Class stride 8: one copy first, as the general path makes.
        (torch.randn(5, 8).t(), ["contiguous", "softclass.cross_entropy"]),
        (torch.randn(2, 3, 4, 5), ["softclass.spatial_cross_entropy"]),
    ],
)
def test_compiled_common_call_is_one_operator_and_no_python_guard(logits, calls):
    """Traced, the common call is the operator and nothing else of softclass's (the entry reads
    one module's globals only): no ``target.long()`` in the graph, no relational guard (a Python
    lambda comparing two routes to one object, run on every call of the compiled code)."""
    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module

    torch._dynamo.reset()
    compiled = torch.compile(S.cross_entropy, backend=backend, fullgraph=True)
    leaf = logits.clone().requires_grad_()
    target = torch.randint(0, logits.shape[1], (logits.shape[0], *logits.shape[2:]))
    loss = compiled(leaf, target, reduction="sum")
    loss.backward()
    expected = logits.clone().requires_grad_()
    F.cross_entropy(expected, target, reduction="sum").backward()
    torch.testing.assert_close(loss.detach(), F.cross_entropy(logits, target, reduction="sum"))
    torch.testing.assert_close(leaf.grad, expected.grad)
    (graph,) = graphs
    assert [
        str(node.target)
        for node in graph.graph.nodes
        if node.op in ("call_function", "call_method")
        and node.target not in (getattr, operator.getitem)
    ] == calls
    (entry,) = torch._dynamo.eval_frame._debug_get_cache_entry_list(S.cross_entropy)
    assert entry.guard_manager.root.get_epilogue_lambda_guards() == []
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
def test_large_compiled_call_writes_the_gradient_in_its_forward_with_torchs_numbers(
    fresh_inductor, backend
):
    """Above the decomposed size the operator stays whole and its forward also writes the
    gradient (the backward scales it): loss and gradient equal torch's, with ignored targets, for
    'mean' and 'sum' and a grad_output that is not 1; under no_grad nothing is made for a
    backward."""
    rows, classes = 1100, 1000  # 1.1M logits: above decompositions.MAX_ELEMENTS
    assert rows * classes > decompositions.MAX_ELEMENTS
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(rows, classes, generator=generator) * 3
    target = torch.randint(0, classes, (rows,), generator=generator)
    target[::7] = -100
    compiled = torch.compile(S.cross_entropy, backend=backend, fullgraph=True)
    for reduction in ("mean", "sum"):
        ours = logits.clone().requires_grad_()
        theirs = logits.clone().requires_grad_()
        loss = compiled(ours, target, reduction=reduction)
        expected = F.cross_entropy(theirs, target, reduction=reduction)
        (loss * 2.5).backward()
        (expected * 2.5).backward()
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(ours.grad, theirs.grad)
    with torch.no_grad():
        torch.testing.assert_close(compiled(logits, target), F.cross_entropy(logits, target))


@pytest.mark.parametrize(("rows", "expected"), [(1100, True), (100, False)])
def test_the_gradient_is_written_in_the_forward_only_above_the_decomposed_size(
    fresh_inductor, rows, expected
):
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    compiled = torch.compile(S.cross_entropy, backend=record, fullgraph=True)
    compiled(torch.randn(rows, 1000, requires_grad=True), torch.randint(0, 1000, (rows,)))
    calls = [
        node
        for node in graphs[0].graph.nodes
        if node.op == "call_function" and "softclass.cross_entropy" in str(node.target)
    ]
    assert len(calls) == 1 and calls[0].args[-1] is expected
