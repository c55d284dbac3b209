"""softclass.kernels: fused cross entropy and fused linear + cross entropy against torch."""

from __future__ import annotations

import itertools
import mmap
import re

import pytest
import torch
import torch.nn.functional as F

from softclass import functional, kernels, nn, validation
from softclass.jobs import bench
from softclass.kernels import cross_entropy_cpu, native, native_loops
from softclass.kernels import softmax as softmax_kernels

REDUCTIONS = ("none", "mean", "sum")
TOLERANCES = {
    torch.float32: {},
    torch.float64: {},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
}


@pytest.fixture(params=["compiled", "compiled-gradient-in-forward", "torch-ops"])
def backend(request, monkeypatch):
    """Run a test on the compiled row loops (with the gradient made in the backward, as traced
    calls do, and made in the forward, as eager calls do) and on the plain torch-ops path."""
    if request.param == "torch-ops":
        monkeypatch.setattr(native_loops, "library_for", lambda logits, target: None)
    elif native.library() is None:
        pytest.fail(f"compiled kernels unavailable: {native.unavailable_reason()}")
    if request.param == "compiled":
        monkeypatch.setattr(cross_entropy_cpu, "_gradient_in_forward", lambda logits, target: False)
    return request.param


def _grid():
    for reduction, weighted, ignore_index, smoothing, probability, dtype in itertools.product(
        REDUCTIONS,
        (False, True),
        (-100, 2),
        (0.0, 0.3),
        (False, True),
        (torch.float32, torch.float64, torch.bfloat16),
    ):
        if probability and ignore_index >= 0:
            continue
        yield reduction, weighted, ignore_index, smoothing, probability, dtype


def _problem(n_rows, n_classes, probability, ignore_index, weighted, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n_rows, n_classes, generator=generator, dtype=torch.float64)
    if probability:
        target = torch.softmax(torch.randn(n_rows, n_classes, generator=generator), 1).double()
    else:
        target = torch.randint(0, n_classes, (n_rows,), generator=generator)
        target[::3] = ignore_index
    weight = torch.rand(n_classes, generator=generator, dtype=torch.float64) + 0.5
    return logits, target, (weight if weighted else None)


def _reference(logits64, target, weight, options, grad_output):
    """torch's loss and gradient, computed in fp64."""
    logits64 = logits64.detach().requires_grad_()
    loss = F.cross_entropy(logits64, target, weight=weight, **options)
    (grad,) = torch.autograd.grad(loss, logits64, grad_output.double())
    return loss, grad


@pytest.mark.parametrize(
    "reduction,weighted,ignore_index,smoothing,probability,dtype", list(_grid())
)
def test_fused_matches_torch(
    backend, reduction, weighted, ignore_index, smoothing, probability, dtype
):
    logits64, target, weight = _problem(23, 13, probability, ignore_index, weighted)
    options = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
    logits = logits64.to(dtype).requires_grad_()
    target_in = target.to(dtype) if probability else target
    weight_in = None if weight is None else weight.to(dtype)
    loss = kernels.cross_entropy(logits, target_in, weight_in, block_rows=5, **options)
    grad_output = torch.rand(loss.shape, dtype=torch.float64) + 0.5  # per item for 'none'
    (grad,) = torch.autograd.grad(loss, logits, grad_output.to(dtype))
    # bf16 is compared with the reference on the same (rounded) values, computed in fp64.
    expected_loss, expected_grad = _reference(
        logits.detach().double(),
        target_in.double() if probability else target,
        None if weight_in is None else weight_in.double(),
        options,
        grad_output,
    )
    assert loss.dtype == dtype and grad.dtype == dtype
    torch.testing.assert_close(loss.double(), expected_loss, **_tol(dtype))
    torch.testing.assert_close(grad.double(), expected_grad, **_tol(dtype))


def _tol(dtype):
    return (
        TOLERANCES[dtype]
        if dtype == torch.bfloat16
        else {"atol": 1e-5, "rtol": 1.3e-5}
        if (dtype == torch.float32)
        else {}
    )


def test_probability_target_gradient_matches_torch(backend):
    logits64, target, weight = _problem(9, 6, True, -100, True)
    target = target.requires_grad_()
    logits = logits64.clone().requires_grad_()
    loss = kernels.cross_entropy(logits, target, weight, label_smoothing=0.2, block_rows=4)
    grads = torch.autograd.grad(loss, (logits, target))
    expected = F.cross_entropy(logits, target, weight, label_smoothing=0.2)
    expected_grads = torch.autograd.grad(expected, (logits, target))
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, expected_grads, strict=False):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "n_rows,n_classes",
    [
        (1, 1),
        (1, 9),
        (7, 8),
        (8, 8),
        (9, 8),
        (17, 7),
        (16, 13),
        (15, 9),
        (8, 1),
    ],
)
def test_block_boundaries_and_chunked_equals_unchunked(backend, n_rows, n_classes):
    logits64, target, weight = _problem(n_rows, n_classes, False, -100, True, seed=n_rows)
    target[::3] = 0
    results = []
    for block_rows in (1, 8, n_rows):
        logits = logits64.float().requires_grad_()
        loss = kernels.cross_entropy(
            logits, target, weight.float(), label_smoothing=0.1, block_rows=block_rows
        )
        loss.backward()
        results.append((loss.detach(), logits.grad))
    expected_loss, expected_grad = _reference(
        logits64, target, weight, {"label_smoothing": 0.1}, torch.tensor(1.0)
    )
    for loss, grad in results:
        torch.testing.assert_close(loss.double(), expected_loss, atol=1e-5, rtol=1.3e-5)
        torch.testing.assert_close(grad.double(), expected_grad, atol=1e-6, rtol=1.3e-5)
    torch.testing.assert_close(results[0][1], results[-1][1], atol=1e-7, rtol=1e-6)


def test_extreme_logits(backend):
    logits = torch.tensor(
        [
            [1e4, -1e4, 0.0, 3.0],
            [-float("inf"), 2.0, -float("inf"), 1.0],
            [-1e4, -1e4, -1e4, -1e4],
            [5.0, -float("inf"), 1e4, 1e4],
        ]
    )
    target = torch.tensor([0, 1, 2, 3])
    for smoothing in (0.0, 0.1):
        ours = logits.clone().requires_grad_()
        theirs = logits.double().requires_grad_()
        options = dict(reduction="none") if smoothing else {}
        loss = kernels.cross_entropy(ours, target, label_smoothing=smoothing, **options)
        expected = F.cross_entropy(theirs, target, label_smoothing=smoothing, **options)
        loss.sum().backward()
        expected.sum().backward()
        # with smoothing, -inf logits make the loss +inf (torch's too). Logits of 1e4 in fp32
        # carry an ulp of ~1e-3, which bounds any fp32 kernel's accuracy here.
        torch.testing.assert_close(loss.double(), expected, atol=2e-3, rtol=1e-5)
        torch.testing.assert_close(ours.grad.double(), theirs.grad, atol=2e-3, rtol=1e-5)


def test_all_ignored_mean_is_nan_with_zero_gradient(backend):
    logits = torch.randn(6, 5, requires_grad=True)
    target = torch.full((6,), -100)
    for smoothing, weight in ((0.0, None), (0.2, torch.rand(5))):
        loss = kernels.cross_entropy(logits, target, weight, label_smoothing=smoothing)
        expected = F.cross_entropy(logits, target, weight, label_smoothing=smoothing)
        assert torch.isnan(loss) and torch.isnan(expected)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.equal(grad, torch.zeros_like(grad))


def test_default_backward_leaves_logits_unchanged(backend):
    logits = torch.randn(10, 300, requires_grad=True)
    before = logits.detach().clone()
    kernels.cross_entropy(logits, torch.randint(0, 300, (10,))).backward()
    assert torch.equal(logits.detach(), before)
    assert logits.grad.data_ptr() != logits.data_ptr()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_inplace_backward_matches_and_reuses_logits_memory(backend, dtype):
    hidden = torch.randn(12, 4, dtype=dtype, requires_grad=True)
    projection = torch.randn(4, 37, dtype=dtype, requires_grad=True)
    target = torch.randint(0, 37, (12,))
    grads = []
    for inplace in (False, True):
        logits = hidden @ projection  # mm saves its inputs, not its output
        address = logits.data_ptr()
        logits.register_hook(
            lambda grad, a=address, i=inplace: grads.append((i, grad.data_ptr() == a))
        )
        loss = kernels.cross_entropy(logits, target, inplace_backward=inplace, block_rows=5)
        grads.append(torch.autograd.grad(loss, (hidden, projection)))
    assert grads[0] == (False, False) and grads[2] == (True, True)
    for got, want in zip(grads[3], grads[1], strict=False):
        torch.testing.assert_close(got, want)


def test_inplace_backward_raises_when_another_node_saved_the_logits(backend):
    scores = torch.randn(5, 7, requires_grad=True)
    logits = scores.exp()  # exp saves its output for its own backward
    loss = kernels.cross_entropy(logits, torch.randint(0, 7, (5,)), inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_inplace_backward_refuses_a_leaf():
    with pytest.raises(ValueError, match="leaf tensor that requires grad"):
        kernels.cross_entropy(
            torch.randn(3, 4, requires_grad=True), torch.tensor([0, 1, 2]), inplace_backward=True
        )


def test_rows_past_two_to_the_31_elements(backend):
    """Row 1 starts at element 2³¹ of a lazily mapped buffer: only the touched pages are real."""
    n_classes = 1000
    row_stride = 1 << 31
    buffer = mmap.mmap(
        -1, (row_stride + n_classes) * 4, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    )
    storage = torch.frombuffer(buffer, dtype=torch.float32)
    logits = storage.as_strided((2, n_classes), (row_stride, 1))
    values = torch.randn(2, n_classes)
    logits.copy_(values)
    target = torch.tensor([3, n_classes - 1])
    leaf = logits.requires_grad_()
    loss = kernels.cross_entropy(leaf, target, reduction="none")
    loss.sum().backward()
    reference = values.double().requires_grad_()
    expected = F.cross_entropy(reference, target, reduction="none")
    expected.sum().backward()
    torch.testing.assert_close(loss.double(), expected)
    torch.testing.assert_close(leaf.grad.double(), reference.grad)


@pytest.mark.parametrize(
    "reduction,weighted,smoothing,probability,with_bias",
    list(itertools.product(REDUCTIONS, (False, True), (0.0, 0.2), (False, True), (False, True))),
)
def test_linear_cross_entropy_matches_torch(
    backend, reduction, weighted, smoothing, probability, with_bias
):
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(19, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(11, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = bias if with_bias else None
    _, target, class_weight = _problem(19, 11, probability, 4, weighted)
    options = dict(
        reduction=reduction, label_smoothing=smoothing, ignore_index=-100 if probability else 4
    )
    inputs = [hidden, weight] + ([bias] if with_bias else [])
    loss = functional.linear_cross_entropy(
        hidden, weight, target, linear_bias=bias, weight=class_weight, **options
    )
    expected = F.cross_entropy(F.linear(hidden, weight, bias), target, class_weight, **options)
    grad_output = torch.rand(loss.shape, dtype=torch.float64) + 0.5
    grads = torch.autograd.grad(loss, inputs, grad_output)
    expected_grads = torch.autograd.grad(expected, inputs, grad_output)
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, expected_grads, strict=False):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("block_rows", [1, 4, 7, 64])
def test_linear_cross_entropy_bf16_and_blocks(backend, block_rows):
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(15, 8, generator=generator).bfloat16().requires_grad_()
    weight = torch.randn(9, 8, generator=generator).bfloat16().requires_grad_()
    target = torch.randint(0, 9, (15,), generator=generator)
    loss = kernels.linear_cross_entropy(hidden, weight, target, block_rows=block_rows)
    grads = torch.autograd.grad(loss, (hidden, weight))
    reference = [hidden.detach().float().requires_grad_(), weight.detach().float().requires_grad_()]
    expected = F.cross_entropy(F.linear(*reference), target)
    expected_grads = torch.autograd.grad(expected, reference)
    assert loss.dtype == torch.bfloat16 and grads[1].dtype == torch.bfloat16
    torch.testing.assert_close(loss.float(), expected, **TOLERANCES[torch.bfloat16])
    for got, want in zip(grads, expected_grads, strict=False):
        torch.testing.assert_close(got.float(), want, **TOLERANCES[torch.bfloat16])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_cross_entropy_no_rows_gives_zero_weight_gradient(backend, dtype):
    """The first block writes the weight gradient (no zero fill): with no rows it is still 0."""
    hidden = torch.randn(0, 4, dtype=dtype, requires_grad=True)
    weight = torch.full((5, 4), 7.0, dtype=dtype, requires_grad=True)
    target = torch.zeros(0, dtype=torch.long)
    F.cross_entropy(F.linear(hidden, weight), target, reduction="sum").backward()
    expected = weight.grad.clone()
    weight.grad = None
    functional.linear_cross_entropy(hidden, weight, target, reduction="sum").backward()
    torch.testing.assert_close(weight.grad, expected)
    assert not weight.grad.any()


def test_linear_cross_entropy_module_and_no_grad():
    class_weight = torch.rand(5)
    module = nn.LinearCrossEntropyLoss(3, 5, bias=True, weight=class_weight, label_smoothing=0.1)
    hidden = torch.randn(4, 3)
    target = torch.tensor([0, 4, 2, 1])
    with torch.no_grad():
        loss = module(hidden, target)
        expected = F.cross_entropy(module.linear(hidden), target, class_weight, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)
    assert "weight" in dict(module.named_buffers())
    assert set(dict(module.named_parameters())) == {"linear.weight", "linear.bias"}


@pytest.mark.parametrize(
    "args,error,match",
    [
        (
            (torch.randn(2, 3, 4), torch.randn(5, 4), torch.tensor([0, 1])),
            ValueError,
            "input must be 2-D",
        ),
        (
            (torch.randn(2, 4), torch.randn(5, 3), torch.tensor([0, 1])),
            ValueError,
            r"linear_weight must have shape \(C, H\)",
        ),
        (
            (torch.randn(2, 4), torch.randn(5, 4).double(), torch.tensor([0, 1])),
            RuntimeError,
            "linear_weight has dtype Double but input has Float",
        ),
        (
            (torch.randn(2, 4), torch.randn(5, 4), torch.rand(2, 3)),
            ValueError,
            r"must have shape \(N, C\)",
        ),
        ((torch.randn(2, 4), torch.randn(5, 4), torch.tensor([0, 7])), IndexError, "out of bounds"),
    ],
)
def test_linear_cross_entropy_validation(args, error, match):
    with pytest.raises(error, match=match):
        functional.linear_cross_entropy(*args)


@pytest.mark.parametrize(
    "bias,error,match",
    [
        (torch.randn(4), ValueError, r"linear_bias must have shape \(C,\) = \(5,\)"),
        (torch.randn(5).double(), RuntimeError, "linear_bias has dtype Double"),
    ],
)
def test_linear_cross_entropy_bias_validation(bias, error, match):
    with pytest.raises(error, match=match):
        functional.linear_cross_entropy(
            torch.randn(2, 4), torch.randn(5, 4), torch.tensor([0, 1]), linear_bias=bias
        )


def test_linear_cross_entropy_refuses_other_devices():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(), pytest.raises(NotImplementedError, match="runs on CPU only"):
        functional.linear_cross_entropy(
            torch.empty(2, 4, device="cuda"),
            torch.empty(5, 4, device="cuda"),
            torch.zeros(2, dtype=torch.long, device="cuda"),
        )


def test_functional_cross_entropy_dispatches_by_the_rule(monkeypatch):
    """Compiled loops (class indices, fp32/bf16/fp64, any class stride: a strided input is made
    contiguous first): fused at every size (the common call through the lean road); otherwise
    (probability targets, fp16, no compiler) fused from 2^14 logits on."""
    from softclass.kernels import lean

    calls = []
    original = cross_entropy_cpu.cross_entropy
    monkeypatch.setattr(
        cross_entropy_cpu,
        "cross_entropy",
        lambda *a, **k: calls.append(a[0].shape) or original(*a, **k),
    )

    def computing(road):
        """``road`` recording the calls it computes (the C++ operator is tried first and
        returns None for dtypes it refuses, e.g. fp16: the general path then computes)."""

        def wrapped(*arguments):
            result = road(*arguments)
            if result is not None:
                calls.append(arguments[1].shape)
            return result

        return wrapped

    for road in ("_forward", "_operator_forward"):  # Python road, C++ operator
        monkeypatch.setattr(lean, road, computing(getattr(lean, road)))
    cases = [
        (torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), True),
        (torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0]), True),
        (torch.randn(4, 3), torch.softmax(torch.randn(4, 3), 1), False),
        (torch.randn(64, 256), torch.softmax(torch.randn(64, 256), 1), True),
        (torch.randn(4, 3).half(), torch.tensor([0, 1, 2, 0]), False),
        (torch.randn(64, 256).half(), torch.randint(0, 256, (64,)), True),
        (torch.randn(3, 8).t(), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), True),  # class stride 3
    ]
    for logits, target, fused in cases:
        calls.clear()
        loss = functional.cross_entropy(logits, target)
        reference_target = target.double() if target.is_floating_point() else target
        expected = F.cross_entropy(logits.double(), reference_target)
        torch.testing.assert_close(loss.double(), expected, atol=1e-2, rtol=1e-2)
        assert (calls == [logits.shape]) == fused, (logits.shape, logits.dtype, calls)
        assert kernels.prefers_fused(logits, target) == fused


def test_bench_measures_a_small_case():
    case = bench.Case(64, 500)
    (result,) = bench.run_benchmarks((case,), repeats=1)
    assert result.torch_seconds > 0 and result.softclass_seconds > 0
    assert result.softclass_peak_bytes is not None and result.softclass_peak_bytes >= 0
    table = bench.format_markdown([result])
    assert "CE 64x500 float32" in table


def _validation_error(target, n_classes, ignore_index):
    """The IndexError validation.check_target_range raises for this target."""
    with pytest.raises(IndexError) as caught:
        validation.check_target_range(target, n_classes, ignore_index, "cross_entropy")
    return caught.value


@pytest.mark.parametrize(
    "logits_shape,target,ignore_index",
    [
        ((5, 4), torch.tensor([0, 3, -100, 4, 9]), -100),  # first bad: 4 at position 3
        ((5, 4), torch.tensor([0, -1, 2, 1, 0]), -100),
        ((3, 40), torch.tensor([39, 2, 40]), 2),  # row path (C > 32), non-default ignore_index
        ((2, 3, 2, 2), torch.tensor([[[0, 1], [2, 3]], [[0, 1], [2, 0]]]), -100),  # (N, C, d1, d2)
        ((3,), torch.tensor(7), -100),  # unbatched: 0-d target
    ],
)
def test_range_error_from_compiled_loops_matches_validation(
    backend, monkeypatch, logits_shape, target, ignore_index
):
    """The fused operator checks the range itself (compiled loops and torch-ops path alike), so
    validation's check is skipped and the error (type and message) is the one validation would
    have raised."""
    n_classes = logits_shape[1] if len(logits_shape) > 1 else logits_shape[0]
    expected = _validation_error(target, n_classes, ignore_index)
    checked = []
    original = validation.check_target_range
    monkeypatch.setattr(
        validation, "check_target_range", lambda *a: checked.append(a) or original(*a)
    )
    logits = torch.randn(logits_shape, requires_grad=True)
    with pytest.raises(IndexError, match=re.escape(str(expected))) as caught:
        functional.cross_entropy(logits, target, ignore_index=ignore_index)
    assert type(caught.value) is IndexError and str(caught.value) == str(expected)
    assert not checked


def test_kernel_called_directly_raises_on_out_of_range_target():
    """The compiled loops never read through a bad target, even without validation in front."""
    with pytest.raises(
        kernels.TargetOutOfBoundsError, match="Target 6 is out of bounds at position 2"
    ):
        kernels.cross_entropy(torch.randn(40, 5), torch.tensor([0, 1, 6] + [0] * 37))
    with pytest.raises(IndexError, match="Target -3 is out of bounds at position 0"):
        kernels.linear_cross_entropy(
            torch.randn(3, 2), torch.randn(50, 2), torch.tensor([-3, 0, 1])
        )


@pytest.mark.parametrize("n_classes", [1, 2, 3, 7, 8, 10, 31, 32, 33, 100])
@pytest.mark.parametrize("n_rows", [1, 15, 16, 17, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_tiled_and_row_loops_with_strides(backend, n_classes, n_rows, dtype):
    """Small C runs in 16-row tiles, larger C row by row: both, partial tiles, a row stride wider
    than C and a strided target, against torch in fp64 (weights, smoothing, ignore_index)."""
    generator = torch.Generator().manual_seed(n_rows * 100 + n_classes)
    wide = 4 * torch.randn(n_rows, n_classes + 5, generator=generator, dtype=torch.float64)
    logits = wide.to(dtype)[:, 2 : 2 + n_classes].requires_grad_()
    target = torch.randint(0, n_classes, (2 * n_rows,), generator=generator)[::2]
    target[::4] = 0 if n_classes == 1 else -100
    weight = (torch.rand(n_classes, generator=generator, dtype=torch.float64) + 0.5).to(dtype)
    for reduction, smoothing in (("mean", 0.0), ("none", 0.25), ("sum", 0.1)):
        options = dict(reduction=reduction, label_smoothing=smoothing)
        loss = functional.cross_entropy(logits, target, weight, **options)
        grad_output = torch.rand(loss.shape, generator=generator, dtype=torch.float64) + 0.5
        (grad,) = torch.autograd.grad(loss, logits, grad_output.to(dtype))
        expected_loss, expected_grad = _reference(
            logits.detach().double(), target, weight.double(), options, grad_output
        )
        # one row with an ignored target: the mean is NaN (0/0) for both
        torch.testing.assert_close(loss.double(), expected_loss, equal_nan=True, **_tol(dtype))
        torch.testing.assert_close(grad.double(), expected_grad, **_tol(dtype))


def test_per_row_loss_with_expanded_grad_output(backend):
    """loss.sum().backward() hands the 'none' backward a stride-0 grad_output."""
    logits = torch.randn(37, 5, requires_grad=True)
    target = torch.randint(0, 5, (37,))
    kernels.cross_entropy(logits, target, reduction="none").sum().backward()
    expected = logits.detach().clone().requires_grad_()
    F.cross_entropy(expected, target, reduction="none").sum().backward()
    torch.testing.assert_close(logits.grad, expected.grad)


@pytest.mark.parametrize("probability", [False, True])
def test_double_backward_through_the_fused_function(backend, probability):
    """create_graph=True takes a differentiable backward, so second derivatives match torch's."""
    logits64, target, weight = _problem(5, 4, probability, 1 if not probability else -100, True)
    logits = logits64.clone().requires_grad_()
    options = dict(label_smoothing=0.2, ignore_index=-100 if probability else 1)
    assert torch.autograd.gradgradcheck(
        lambda x: kernels.cross_entropy(x, target, weight, **options), (logits,)
    )
    for reduction in REDUCTIONS:
        (grad,) = torch.autograd.grad(
            kernels.cross_entropy(logits, target, weight, reduction=reduction, **options).sum(),
            logits,
            create_graph=True,
        )
        (expected,) = torch.autograd.grad(
            F.cross_entropy(logits, target, weight, reduction=reduction, **options).sum(),
            logits,
            create_graph=True,
        )
        second = torch.autograd.grad((grad**2).sum(), logits)
        expected_second = torch.autograd.grad((expected**2).sum(), logits)
        torch.testing.assert_close(second, expected_second)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradient_made_in_forward_survives_retain_graph(backend, reduction):
    """A scalar loss's gradient is made in the forward and scaled in the backward; a second
    backward (retain_graph) must give the same gradient again, for grad_output 1 and not."""
    logits = torch.randn(33, 70, requires_grad=True)
    target = torch.randint(0, 70, (33,))
    target[::5] = -100
    weight = torch.rand(70) + 0.5
    loss = kernels.cross_entropy(logits, target, weight, reduction=reduction, label_smoothing=0.1)
    expected_logits = logits.detach().clone().requires_grad_()
    expected = F.cross_entropy(
        expected_logits, target, weight, reduction=reduction, label_smoothing=0.1
    )
    for factor in (1.0, 2.5, 1.0):
        (grad,) = torch.autograd.grad(factor * loss, logits, retain_graph=True)
        (expected_grad,) = torch.autograd.grad(
            factor * expected, expected_logits, retain_graph=True
        )
        torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_eager_backward_makes_no_second_pass(monkeypatch, reduction):
    """An eager loss's gradient is made by the forward (per row for 'none'), so its backward
    never walks the logits again (and may follow an in-place change of the logits)."""
    backward_passes = []
    original = native_loops.gradient
    monkeypatch.setattr(
        native_loops, "gradient", lambda *a: backward_passes.append(1) or original(*a)
    )
    logits = torch.randn(40, 70, requires_grad=True)
    target = torch.randint(0, 70, (40,))
    grad_output = torch.rand(40) if reduction == "none" else torch.tensor(1.5)
    loss = kernels.cross_entropy(logits, target, reduction=reduction)
    (grad,) = torch.autograd.grad(loss, logits, grad_output)
    expected_loss = F.cross_entropy(logits, target, reduction=reduction)
    (expected,) = torch.autograd.grad(expected_loss, logits, grad_output)
    torch.testing.assert_close(grad, expected)
    assert backward_passes == []


def test_no_gradient_is_made_under_no_grad(monkeypatch):
    """Under torch.no_grad() no backward can follow: the forward must not write a gradient, even
    for logits that require grad (ctx.needs_input_grad says True there)."""
    made = []
    original = native_loops.forward
    monkeypatch.setattr(
        native_loops, "forward", lambda *a: made.append(a[-2] is not None) or original(*a)
    )
    logits = torch.randn(20, 9, requires_grad=True)
    target = torch.randint(0, 9, (20,))
    with torch.no_grad():
        kernels.cross_entropy(logits, target)
    kernels.cross_entropy(logits, target)
    assert made == [False, True]


def test_vmap_rules_of_the_registered_ops_match_a_loop():
    """torch.func routes softclass.functional to torch ops; the operators themselves (reached
    e.g. through softclass.kernels) carry their own vmap rules: per batch entry, or the batch
    folded into the rows for softmax."""
    logits = torch.randn(3, 6, 5, dtype=torch.float64)
    target = torch.randint(0, 5, (3, 6))
    batched = torch.func.vmap(lambda x, t: kernels.cross_entropy(x, t, label_smoothing=0.1))
    expected = torch.stack(
        [F.cross_entropy(x, t, label_smoothing=0.1) for x, t in zip(logits, target, strict=True)]
    )
    torch.testing.assert_close(batched(logits, target), expected)
    hidden, weight = torch.randn(3, 6, 4, dtype=torch.float64), torch.randn(5, 4).double()
    linear = torch.func.vmap(lambda h, t: kernels.linear_cross_entropy(h, weight, t))
    expected = torch.stack(
        [F.cross_entropy(h @ weight.t(), t) for h, t in zip(hidden, target, strict=True)]
    )
    torch.testing.assert_close(linear(hidden, target), expected)
    softmax = torch.func.vmap(lambda x: softmax_kernels.softmax(x, 1, log=True), in_dims=1)
    torch.testing.assert_close(softmax(logits), F.log_softmax(logits, 2).transpose(0, 1))
