"""The registered operator of the spatial cross entropy (``softclass::spatial_cross_entropy``) under
torch.library's own checks, torch.compile, torch.export, FakeTensor and meta; and the lean road of
small (N, C, d1, ...) calls (softclass.kernels.lean) against torch.nn.functional.cross_entropy."""

import ast
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import softclass.functional as SF
import softclass.nn as snn
from softclass.kernels import cross_entropy_op, lean, native
from softclass.kernels import spatial_cross_entropy_cpu as spatial

pytestmark = pytest.mark.skipif(
    native.library() is None, reason="the compiled library is needed for the spatial loops"
)

OP = torch.ops.softclass.spatial_cross_entropy.default
BACKWARD_OP = torch.ops.softclass.spatial_cross_entropy_backward.default


def _case(shape, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=generator, dtype=dtype) * 3
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=generator)
    target.view(-1)[::4] = min(1, shape[1] - 1)  # ignored where ignore_index is 1
    return logits, target


def _weight(n_classes, dtype=torch.float64):
    return torch.rand(n_classes, generator=torch.Generator().manual_seed(5), dtype=dtype) + 0.1


@pytest.mark.parametrize(
    ("shape", "dtype", "gradient_in_forward"),
    [
        ((2, 5, 4, 3), torch.float64, False),
        ((2, 5, 4, 3), torch.float64, True),
        ((3, 1, 2, 2), torch.float32, True),
        ((1, 7, 6), torch.float32, False),
    ],
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_opcheck_of_the_operators(shape, dtype, gradient_in_forward, reduction):
    """torch.library.opcheck (schema, autograd registration, fake tensor, AOT dispatch with
    dynamic shapes) of the forward op with every option, and of its backward op."""
    logits, target = _case(shape, dtype)
    for weight, ignore_index, smoothing in [(None, -100, 0.0), (_weight(shape[1], dtype), 1, 0.2)]:
        arguments = (logits.clone().requires_grad_(), target, weight, ignore_index)
        arguments += (reduction, smoothing, gradient_in_forward)
        torch.library.opcheck(OP, arguments)
        loss, logsumexp, denominator, _ = OP(*arguments)
        grad_output = torch.rand_like(loss)
        backward_arguments = (grad_output, logits, target, weight, logsumexp, denominator)
        torch.library.opcheck(
            BACKWARD_OP, (*backward_arguments, ignore_index, reduction, smoothing)
        )


def test_opcheck_without_the_compiled_loops(monkeypatch):
    """Without the compiled library (and for float16 logits) the operator computes through the
    2-D implementation on the moved logits: same checks pass, same numbers as torch."""
    monkeypatch.setattr(native, "library", lambda: None)
    logits, target = _case((2, 4, 3, 5))
    weight = _weight(4)
    for gradient_in_forward in (False, True):
        torch.library.opcheck(
            OP,
            (logits.clone().requires_grad_(), target, weight, 1, "mean", 0.1, gradient_in_forward),
        )
    for dtype in (torch.float64, torch.float16):
        leaf = logits.to(dtype).clone().requires_grad_()
        loss = spatial.registered_cross_entropy(leaf, target, weight.to(dtype), 1, "sum", 0.1)
        reference = logits.to(dtype).clone().requires_grad_()
        expected = F.cross_entropy(
            reference,
            target,
            weight.to(dtype),
            ignore_index=1,
            reduction="sum",
            label_smoothing=0.1,
        )
        loss.backward()
        expected.backward()
        tolerance = dict(rtol=2e-3, atol=2e-3) if dtype == torch.float16 else {}
        assert_close(loss, expected, **tolerance)
        assert leaf.grad is not None
        assert_close(leaf.grad, reference.grad, **tolerance)


def _graph_ops(function, *args, **kwargs):
    """The call targets of the graph torch.compile(fullgraph=True) makes of ``function``."""
    seen = []

    def backend(graph_module, example_inputs):
        seen.extend(str(node.target) for node in graph_module.graph.nodes)
        return graph_module.forward

    torch._dynamo.reset()
    torch.compile(function, backend=backend, fullgraph=True)(*args, **kwargs)
    return seen


def test_compile_keeps_the_spatial_operator():
    logits, target = _case((2, 5, 4, 3))
    ops = _graph_ops(SF.cross_entropy, logits, target)
    assert any(op.startswith("softclass.spatial_cross_entropy") for op in ops), ops
    assert not any(op.startswith("softclass.cross_entropy") for op in ops)
    assert not any("movedim" in op or "permute" in op for op in ops)


@pytest.mark.parametrize(
    ("weighted", "ignore_index", "reduction", "smoothing"),
    list(itertools.product([False, True], [-100, 1], ["mean", "sum", "none"], [0.0, 0.15])),
)
def test_compiled_values_and_gradients_match_torch(weighted, ignore_index, reduction, smoothing):
    torch._dynamo.reset()
    logits, target = _case((2, 5, 4, 3))
    options = dict(
        weight=_weight(5) if weighted else None,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=smoothing,
    )
    compiled = torch.compile(SF.cross_entropy, backend="aot_eager", fullgraph=True)
    leaf, reference = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss = compiled(leaf, target, **options)
    expected = F.cross_entropy(reference, target, **options)
    grad_output = torch.rand_like(expected)
    loss.backward(grad_output)
    expected.backward(grad_output)
    assert_close(loss, expected)
    assert_close(leaf.grad, reference.grad)


def test_export_holds_the_operator_with_a_dynamic_batch():
    logits, target = _case((3, 5, 4, 2))
    batch = torch.export.Dim("batch", min=2)
    program = torch.export.export(
        snn.CrossEntropyLoss(label_smoothing=0.1),
        (logits, target),
        dynamic_shapes=({0: batch}, {0: batch}),
    )
    assert "softclass.spatial_cross_entropy.default" in [
        str(node.target) for node in program.graph.nodes
    ]
    other_logits, other_target = _case((5, 5, 4, 2), seed=1)
    assert_close(
        program.module()(other_logits, other_target),
        F.cross_entropy(other_logits, other_target, label_smoothing=0.1),
    )


@pytest.mark.parametrize("mode", ["compile", "export"])
def test_out_of_range_target_is_named_by_position_when_traced(mode):
    torch._dynamo.reset()
    logits, target = _case((2, 5, 4, 3))
    target[1, 2, 0] = 9
    with pytest.raises(
        IndexError, match=r"Target 9 is out of bounds at position \(1, 2, 0\)"
    ) as eager:
        SF.cross_entropy(logits, target)
    if mode == "compile":
        traced = torch.compile(SF.cross_entropy, backend="aot_eager", fullgraph=True)
    else:
        traced = torch.export.export(snn.CrossEntropyLoss(), _case((2, 5, 4, 3))).module()
    with pytest.raises(IndexError) as caught:
        traced(logits, target)
    assert str(eager.value) in str(caught.value)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_meta_and_fake_tensors_get_the_shapes(reduction):
    logits = torch.empty(2, 5, 4, 3, device="meta", requires_grad=True)
    target = torch.empty(2, 4, 3, dtype=torch.long, device="meta")
    loss = SF.cross_entropy(logits, target, reduction=reduction)
    expected_shape = (2, 4, 3) if reduction == "none" else ()
    assert loss.shape == expected_shape and loss.device.type == "meta"
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake_logits = mode.from_tensor(torch.randn(2, 5, 4, 3)).requires_grad_()
        fake_target = mode.from_tensor(torch.randint(0, 5, (2, 4, 3)))
        fake_loss = SF.cross_entropy(fake_logits, fake_target, reduction=reduction)
        fake_loss.sum().backward()
        assert fake_loss.shape == expected_shape
        assert fake_logits.grad.shape == (2, 5, 4, 3)


_LEAN_TOLERANCE = {
    torch.float32: dict(rtol=2e-5, atol=2e-6),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
    torch.float64: {},
}


def _torch_reference(dtype):
    """torch's cross entropy; for bfloat16 computed in float32 and rounded once (torch's own
    bfloat16 loss sums in bfloat16: 3200 against the exact 5216 at (4, 5, 33, 17), where
    softclass accumulates in float32 as the spec asks)."""
    if dtype != torch.bfloat16:
        return F.cross_entropy
    return lambda logits, *args, **kwargs: F.cross_entropy(logits.float(), *args, **kwargs).to(
        dtype
    )


@pytest.mark.parametrize(
    ("dtype", "reduction", "ignore_index", "shape"),
    list(
        itertools.product(
            _LEAN_TOLERANCE,
            ["mean", "sum"],
            [-100, 1],
            [(1, 1, 3), (2, 3, 4), (4, 5, 33, 17), (2, 40, 3, 2, 2)],
        )
    ),
)
@pytest.mark.parametrize("road", ["operator", "python"])
def test_lean_road_of_spatial_inputs_matches_torch(
    monkeypatch, dtype, reduction, ignore_index, shape, road
):
    """Small (N, C, d1, ...) calls take softclass.kernels.lean (one compiled call: the C++
    operator, or without it the Python road); loss, gradient for grad_output 1 and not, second
    and double backward and no-grad are torch's."""
    taken = []
    if road == "python":
        monkeypatch.setattr(cross_entropy_op, "operator", lambda: None)
    name = "_forward_spatial" if road == "python" else "_operator_forward"
    original = getattr(lean, name)
    monkeypatch.setattr(lean, name, lambda *a: taken.append(1) or original(*a))
    logits, target = _case(shape, dtype, seed=3)
    if shape[1] == 1:
        target.zero_()
    results = []
    for function in (SF.cross_entropy, _torch_reference(dtype)):
        leaf = logits.clone().requires_grad_()
        loss = function(leaf, target, ignore_index=ignore_index, reduction=reduction)
        first = torch.autograd.grad(2.5 * loss, leaf, retain_graph=True)
        again = torch.autograd.grad(loss, leaf, retain_graph=True)
        second = torch.autograd.grad(loss, leaf, create_graph=True)
        (curvature,) = torch.autograd.grad((second[0] ** 2).sum(), leaf)
        with torch.no_grad():
            no_grad_loss = function(leaf, target, ignore_index=ignore_index, reduction=reduction)
        results.append((loss, *first, *again, *second, curvature, no_grad_loss))
    assert_close(results[0], results[1], **_LEAN_TOLERANCE[dtype])
    # the loss, the second backward (made inside the operator's C++ node), the no-grad loss
    assert len(taken) == (3 if road == "python" else 2)


def test_lean_road_of_spatial_inputs_reports_the_target_position():
    logits, target = _case((2, 5, 4, 3), torch.float32)
    target[0, 3, 1] = -2
    with pytest.raises(IndexError, match=r"Target -2 is out of bounds at position \(0, 3, 1\)"):
        SF.cross_entropy(logits.requires_grad_(), target)


def test_lean_road_leaves_other_spatial_calls_to_the_general_path(monkeypatch):
    """Non-contiguous or uint8 inputs: the C++ operator (which checks dtypes and layout itself)
    refuses them, the compiled spatial loops are not called, the general path computes."""
    taken = []
    original_spatial = lean._forward_spatial
    monkeypatch.setattr(
        lean, "_forward_spatial", lambda *a: taken.append("loops") or original_spatial(*a)
    )
    original_operator = lean._operator_forward
    monkeypatch.setattr(
        lean,
        "_operator_forward",
        lambda *a: (
            loss
            if (loss := original_operator(*a)) is None
            else taken.append("operator computed") or loss
        ),
    )
    logits, target = _case((2, 5, 4, 3), torch.float32)
    transposed = logits.transpose(2, 3)
    assert_close(
        SF.cross_entropy(transposed, target.transpose(1, 2)),
        F.cross_entropy(transposed, target.transpose(1, 2)),
    )
    assert_close(SF.cross_entropy(logits, target.to(torch.uint8)), F.cross_entropy(logits, target))
    assert taken == []


@pytest.mark.skipif(cross_entropy_op.operator() is None, reason="needs the C++ operator")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_threaded_loops_give_the_same_numbers_on_any_thread_count(dtype):
    """Above 2^17 logits the C++ spatial loops split the positions into parts run on torch's
    intra-op threads; the parts depend on the sizes only, so 1 and 3 threads give bit-identical
    losses, L, denominators and gradients (and the same numbers as torch)."""
    logits, target = _case((3, 21, 64, 40), dtype)  # 161,280 logits: two parts or more
    weight = _weight(21, dtype)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            for options in [(None, -100, "mean", 0.0), (weight, 1, "none", 0.1)]:
                outputs = OP(logits, target, *options, True)
                generator = torch.Generator().manual_seed(1)
                grad_output = torch.rand(outputs[0].shape, generator=generator, dtype=dtype)
                gradient = BACKWARD_OP(
                    grad_output, logits, target, options[0], *outputs[1:3], *options[1:]
                )
                results.append((*outputs, gradient))
    finally:
        torch.set_num_threads(threads)
    for one, three in zip(results[:2], results[2:], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(one, three, strict=True))
    leaf = logits.clone().requires_grad_()
    options = {"ignore_index": 1, "label_smoothing": 0.1}
    SF.cross_entropy(leaf, target, weight=weight, **options).backward()
    # torch in float64 (its float32 sums of weighted losses round: 3.5e-6 relative here)
    reference = logits.double().requires_grad_()
    expected = F.cross_entropy(reference, target, weight=weight.double(), **options)
    expected.backward()
    assert_close(SF.cross_entropy(logits, target, weight=weight, **options), expected.to(dtype))
    assert_close(leaf.grad, reference.grad.to(dtype))


@pytest.mark.skipif(
    cross_entropy_op.operator() is None or not Path("/proc/self/maps").exists(),
    reason="needs the C++ operator and /proc",
)
def test_one_openmp_runtime_in_the_process():
    """The C++ extension (compiled with -fopenmp for at::parallel_for) uses torch's own OpenMP
    runtime: a fresh process that loads torch and the extension maps one libgomp/libomp/libiomp
    (other libraries, e.g. scikit-learn's, may bring their own)."""
    script = (
        "import re, torch\n"
        "from softclass.kernels import cross_entropy_op\n"
        "assert cross_entropy_op.operator() is not None\n"
        "names = {line.split()[-1] for line in open('/proc/self/maps')}\n"
        "print(sorted(n for n in names if re.search(r'lib(g|i)?omp[^/]*[.]so', n)))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(Path(spatial.__file__).parents[2])}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment
    )
    assert run.returncode == 0, run.stderr[-2000:]
    mapped = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    assert len(mapped) == 1, mapped
