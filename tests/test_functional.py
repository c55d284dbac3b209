"""Parity of softclass.functional with torch.nn.functional: values, gradients and errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from softclass import functional as S

INF = float("inf")

# (input shape, target shape): unbatched, batched, K=1 and K=2 spatial dims; C = 1, 2 and 7 (prime).
SHAPES = [
    ((7,), ()),
    ((1, 7), (1,)),
    ((6, 7), (6,)),
    ((5, 1), (5,)),
    ((4, 2), (4,)),
    ((3, 7, 5), (3, 5)),
    ((2, 5, 3, 4), (2, 3, 4)),
]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    if dtype == torch.bfloat16:
        return {"rtol": 2e-2, "atol": 2e-2}
    if dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-12}
    return {"rtol": 1e-5, "atol": 1e-6}


def _inputs(input_shape, target_shape, dtype, target_kind, ignore_index, seed=0):
    generator = torch.Generator().manual_seed(seed)
    class_dim = 0 if len(input_shape) == 1 else 1
    n_classes = input_shape[class_dim]
    logits = (torch.randn(input_shape, generator=generator, dtype=torch.float64) * 3).to(dtype)
    if target_kind == "index":
        target = torch.randint(0, n_classes, target_shape, generator=generator)
        if ignore_index >= 0 and target.dim() > 0:
            target.view(-1)[::3] = ignore_index
    else:
        raw = torch.rand(input_shape, generator=generator, dtype=torch.float64)
        target = (raw / raw.sum(class_dim, keepdim=True)).to(
            torch.float32 if dtype == torch.bfloat16 else dtype
        )
    return logits, target, n_classes


def _reference_dtype(dtype):
    """torch's own result in bf16 is rounded; softclass accumulates in fp32, so bf16 cases are
    compared against torch's fp32 result (the more exact value) with a bf16 tolerance."""
    return torch.float32 if dtype == torch.bfloat16 else dtype


def _cross_entropy_grid():
    """Every valid combination: probability targets refuse ignore_index >= 0 (see test_errors),
    and ignore_index=1 needs a class 1 (C >= 2)."""
    for (input_shape, target_shape), target_kind, ignore_index in itertools.product(
        SHAPES, ["index", "prob"], [-100, 1]
    ):
        n_classes = input_shape[0 if len(input_shape) == 1 else 1]
        if ignore_index >= 0 and (target_kind == "prob" or n_classes < 2):
            continue
        yield input_shape, target_shape, target_kind, ignore_index


@pytest.mark.parametrize(
    "input_shape,target_shape,target_kind,ignore_index", list(_cross_entropy_grid())
)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
def test_cross_entropy_matches_torch(
    input_shape,
    target_shape,
    target_kind,
    ignore_index,
    dtype,
    reduction,
    use_weight,
    label_smoothing,
):
    logits, target, n_classes = _inputs(input_shape, target_shape, dtype, target_kind, ignore_index)
    weight = torch.rand(n_classes, dtype=torch.float64).add(0.1).to(dtype) if use_weight else None
    kwargs = {
        "reduction": reduction,
        "ignore_index": ignore_index,
        "label_smoothing": label_smoothing,
    }

    ours_input = logits.clone().requires_grad_()
    ours = S.cross_entropy(ours_input, target, weight=weight, **kwargs)
    reference_dtype = _reference_dtype(dtype)
    ref_input = logits.to(reference_dtype).requires_grad_()
    ref_weight = None if weight is None else weight.to(reference_dtype)
    ref_target = target if target_kind == "index" else target.to(reference_dtype)
    reference = F.cross_entropy(ref_input, ref_target, weight=ref_weight, **kwargs)

    expected_dtype = dtype if target_kind == "index" else torch.promote_types(dtype, target.dtype)
    assert ours.dtype == expected_dtype
    assert ours.shape == reference.shape
    assert_close(ours.to(reference_dtype), reference, equal_nan=True, **_tolerance(dtype))

    upstream = torch.rand(
        reference.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    (ours_grad,) = torch.autograd.grad(ours, ours_input, upstream.to(ours.dtype))
    (ref_grad,) = torch.autograd.grad(reference, ref_input, upstream.to(reference.dtype))
    assert ours_grad.dtype == dtype
    assert_close(ours_grad.to(reference_dtype), ref_grad, equal_nan=True, **_tolerance(dtype))


@pytest.mark.parametrize("input_shape,target_shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 0])
def test_nll_loss_matches_torch(
    input_shape, target_shape, dtype, reduction, use_weight, ignore_index
):
    logits, target, n_classes = _inputs(input_shape, target_shape, dtype, "index", ignore_index)
    class_dim = 0 if len(input_shape) == 1 else 1
    log_probs = torch.log_softmax(logits.double(), class_dim).to(dtype)
    weight = torch.rand(n_classes, dtype=torch.float64).add(0.1).to(dtype) if use_weight else None
    kwargs = {"weight": weight, "reduction": reduction, "ignore_index": ignore_index}

    ours_input = log_probs.clone().requires_grad_()
    ours = S.nll_loss(ours_input, target, **kwargs)
    reference_dtype = _reference_dtype(dtype)
    ref_input = log_probs.to(reference_dtype).requires_grad_()
    ref_kwargs = dict(kwargs, weight=None if weight is None else weight.to(reference_dtype))
    reference = F.nll_loss(ref_input, target, **ref_kwargs)

    assert ours.dtype == dtype and ours.shape == reference.shape
    assert_close(ours.to(reference_dtype), reference, equal_nan=True, **_tolerance(dtype))
    upstream = torch.rand(
        reference.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    (ours_grad,) = torch.autograd.grad(ours, ours_input, upstream.to(dtype))
    (ref_grad,) = torch.autograd.grad(reference, ref_input, upstream.to(reference_dtype))
    assert_close(ours_grad.to(reference_dtype), ref_grad, **_tolerance(dtype))


@pytest.mark.parametrize(
    "shape,dim",
    [((7,), 0), ((4, 7), 1), ((4, 7), 0), ((3, 5, 6), -1), ((2, 3, 4, 5), 1), ((), 0), ((0, 3), 1)],
)
@pytest.mark.parametrize("dtype", [*DTYPES, torch.float16])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family_matches_torch(shape, dim, dtype, name):
    values = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 4
    ours_input = values.to(dtype).requires_grad_()
    ref_input = values.to(dtype).requires_grad_()
    ours = getattr(S, name)(ours_input, dim)
    reference = getattr(F, name)(ref_input, dim)
    assert ours.dtype == reference.dtype and ours.shape == reference.shape
    tolerance = _tolerance(dtype) if dtype != torch.float16 else {"rtol": 2e-3, "atol": 2e-3}
    assert_close(ours, reference, **tolerance)
    if values.numel():
        upstream = torch.randn(
            shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4)
        )
        upstream = upstream.to(dtype)
        (ours_grad,) = torch.autograd.grad(ours, ours_input, upstream)
        (ref_grad,) = torch.autograd.grad(reference, ref_input, upstream)
        assert_close(ours_grad, ref_grad, **tolerance)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_dtype_argument(name):
    values = torch.randn(3, 5).bfloat16()
    ours = getattr(S, name)(values, 1, dtype=torch.float64)
    reference = getattr(F, name)(values, 1, dtype=torch.float64)
    assert ours.dtype == torch.float64
    assert_close(ours, reference)
    integers = torch.arange(6).reshape(2, 3)
    assert_close(
        getattr(S, name)(integers, 1, dtype=torch.float32),
        getattr(F, name)(integers, 1, dtype=torch.float32),
    )


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_implicit_dim_warns_and_matches_torch(name):
    values = torch.randn(2, 3, 4)
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        ours = getattr(S, name)(values)
    with pytest.warns(UserWarning):
        reference = getattr(F, name)(values)
    assert_close(ours, reference)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_extreme_and_masked_rows_match_torch(name):
    rows = torch.tensor(
        [
            [1e4, -1e4, 0.0],
            [-1e4, -1e4, -1e4],
            [1.0, -INF, 2.0],
            [-INF, -INF, -INF],
            [INF, 1.0, 2.0],
            [float("nan"), 1.0, 2.0],
            [3e38, 3e38, -3e38],
        ]
    )
    ours_input = rows.clone().requires_grad_()
    ref_input = rows.clone().requires_grad_()
    ours = getattr(S, name)(ours_input, 1)
    reference = getattr(F, name)(ref_input, 1)
    assert_close(ours, reference, equal_nan=True)
    upstream = torch.ones_like(rows)
    upstream[:, 0] = 2.0
    (ours_grad,) = torch.autograd.grad(ours, ours_input, upstream)
    (ref_grad,) = torch.autograd.grad(reference, ref_input, upstream)
    assert_close(ours_grad, ref_grad, equal_nan=True)


def test_cross_entropy_extreme_logits_and_nan():
    logits = torch.tensor(
        [[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0], [0.0, -INF, 1.0]], requires_grad=True
    )
    target = torch.tensor([1, 1, 2])
    ours = S.cross_entropy(logits, target, reduction="none")
    reference = F.cross_entropy(logits, target, reduction="none")
    assert_close(ours, reference)
    assert torch.isfinite(ours).all()
    nan_logits = torch.tensor([[float("nan"), 1.0], [0.0, 1.0]])
    assert_close(
        S.cross_entropy(nan_logits, torch.tensor([0, 1]), reduction="none"),
        F.cross_entropy(nan_logits, torch.tensor([0, 1]), reduction="none"),
        equal_nan=True,
    )


@pytest.mark.parametrize("dim", [0, 1, (0, 1), [1], -1])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dtype", [*DTYPES, torch.int64])
def test_logsumexp_matches_torch(dim, keepdim, dtype):
    generator = torch.Generator().manual_seed(13)
    values = torch.randn(4, 6, dtype=torch.float64, generator=generator) * 10
    values = values.to(dtype) if dtype != torch.int64 else values.round().long()
    floating = values.is_floating_point()
    reference_dtype = _reference_dtype(dtype) if floating else values.dtype
    ours_input = values.clone().requires_grad_(floating)
    ref_input = values.to(reference_dtype).requires_grad_(floating)
    ours = S.logsumexp(ours_input, dim, keepdim)
    reference = torch.logsumexp(ref_input, dim, keepdim)
    assert ours.dtype == torch.logsumexp(values, dim, keepdim).dtype
    assert ours.shape == reference.shape
    tolerance = _tolerance(dtype if floating else torch.float32)
    assert_close(ours.to(reference.dtype), reference, **tolerance)
    if floating:
        upstream = torch.rand(reference.shape, dtype=torch.float64, generator=generator)
        ours_grad = torch.autograd.grad(ours, ours_input, upstream.to(dtype))[0]
        ref_grad = torch.autograd.grad(reference, ref_input, upstream.to(reference_dtype))[0]
        assert_close(ours_grad.to(reference_dtype), ref_grad, **tolerance)


def test_logsumexp_infinities_match_torch():
    rows = torch.tensor(
        [[-INF, -INF, -INF], [1.0, -INF, 2.0], [INF, 1.0, 2.0], [-INF, INF, 0.0], [1e4, 1e4, -1e4]]
    )
    assert_close(S.logsumexp(rows, 1), torch.logsumexp(rows, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("use_weight,label_smoothing", [(False, 0.0), (True, 0.0), (True, 0.3)])
def test_cross_entropy_equals_nll_of_log_softmax(dtype, use_weight, label_smoothing):
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(32, 11, generator=generator, dtype=dtype)
    target = torch.randint(0, 11, (32,), generator=generator)
    weight = torch.rand(11, generator=generator, dtype=dtype) if use_weight else None
    first = logits.clone().requires_grad_()
    second = logits.clone().requires_grad_()
    ce = S.cross_entropy(first, target, weight=weight)
    nll = S.nll_loss(S.log_softmax(second, 1), target, weight=weight)
    assert_close(ce, nll, rtol=0, atol=4 * torch.finfo(dtype).eps)
    assert_close(
        torch.autograd.grad(ce, first)[0],
        torch.autograd.grad(nll, second)[0],
        rtol=0,
        atol=4 * torch.finfo(dtype).eps,
    )
    if label_smoothing:
        smoothed = S.cross_entropy(logits, target, weight=weight, label_smoothing=label_smoothing)
        assert_close(
            smoothed,
            F.cross_entropy(logits, target, weight=weight, label_smoothing=label_smoothing),
        )


def test_index_targets_equal_one_hot_probability_targets():
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(9, 5, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 5, (9,), generator=generator)
    for smoothing in (0.0, 0.2):
        by_index = S.cross_entropy(logits, target, label_smoothing=smoothing)
        by_prob = S.cross_entropy(
            logits, S.one_hot(target, 5, dtype=torch.float64), label_smoothing=smoothing
        )
        assert_close(by_index, by_prob)


def test_log_softmax_exp_equals_softmax():
    values = torch.randn(6, 9, dtype=torch.float64) * 5
    assert_close(S.log_softmax(values, 1).exp(), S.softmax(values, 1))


def test_double_backward_matches_torch():
    values = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, 1])
    assert torch.autograd.gradgradcheck(lambda v: S.softmax(v, 1), (values,))
    assert torch.autograd.gradgradcheck(lambda v: S.log_softmax(v, 1), (values,))
    assert torch.autograd.gradgradcheck(lambda v: S.cross_entropy(v, target), (values,))
    assert torch.autograd.gradcheck(lambda v: S.logsumexp(v, 1), (values,))


def test_all_ignored_mean_is_nan_and_sum_is_zero():
    logits = torch.randn(3, 4, requires_grad=True)
    target = torch.full((3,), -100)
    assert torch.isnan(S.cross_entropy(logits, target))
    assert torch.isnan(S.nll_loss(logits, target))
    total = S.cross_entropy(logits, target, reduction="sum")
    assert total.item() == 0.0
    (grad,) = torch.autograd.grad(total, logits)
    assert torch.count_nonzero(grad) == 0
    assert torch.isnan(S.cross_entropy(torch.randn(0, 4), torch.zeros(0, dtype=torch.long)))
    assert torch.isnan(S.cross_entropy(torch.randn(0, 4), torch.zeros(0, 4)))


def test_ignore_index_may_be_a_valid_class_and_uint8_targets_work():
    logits = torch.randn(5, 4)
    target = torch.tensor([0, 2, 2, 3, 1], dtype=torch.uint8)
    assert_close(
        S.cross_entropy(logits, target, ignore_index=2),
        F.cross_entropy(logits, target, ignore_index=2),
    )


def test_deprecated_size_average_and_reduce():
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    with pytest.warns(UserWarning, match="reduction='sum'"):
        ours = S.cross_entropy(logits, target, size_average=False)
    assert_close(ours, F.cross_entropy(logits, target, reduction="sum"))
    with pytest.warns(UserWarning, match="reduction='none'"):
        assert S.nll_loss(logits, target, reduce=False).shape == (4,)


def test_gather_uses_linear_memory():
    """The batch NLL gathers one value per row: a 20000-row batch must not build an N×N matrix."""
    rows = 20000
    log_probs = torch.log_softmax(torch.randn(rows, 3), 1)
    target = torch.randint(0, 3, (rows,))
    assert_close(S.nll_loss(log_probs, target), F.nll_loss(log_probs, target))


def test_one_hot_mse_and_mcee_match_definitions():
    probs = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]], dtype=torch.float64)
    index_targets = torch.tensor([1, 0])
    one_hot = S.one_hot(index_targets, 3, dtype=torch.float64)
    assert one_hot.tolist() == [[0, 1, 0], [1, 0, 0]]
    per_item = ((probs - one_hot) ** 2).sum(1)
    assert_close(S.mse_onehot(probs, index_targets, reduction="none"), per_item)
    assert_close(S.mse_onehot(probs, one_hot), per_item.mean())
    assert_close(
        S.mcee(probs, one_hot, reduction="none"),
        -torch.log(torch.tensor([0.7, 0.5], dtype=torch.float64)),
    )
    assert S.mcee(probs, index_targets, reduction="sum").item() == pytest.approx(
        -math.log(0.7) - math.log(0.5)
    )


def test_mcee_of_softmax_equals_cross_entropy_and_stays_finite():
    logits = torch.randn(8, 5, dtype=torch.float64)
    target = torch.randint(0, 5, (8,))
    assert_close(S.mcee(S.softmax(logits, 1), target), S.cross_entropy(logits, target))
    underflow = torch.tensor([[1.0, 0.0]])
    loss = S.mcee(underflow, torch.tensor([1]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(-math.log(torch.finfo().tiny))


def test_nn_modules_match_torch_modules():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 4, generator=generator)
    target = torch.tensor([0, 1, 2, 3, -100, 1])
    weight = torch.rand(4, generator=generator)
    from softclass import nn as snn

    pairs = [
        (
            snn.CrossEntropyLoss(weight=weight, label_smoothing=0.1),
            torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1),
            logits,
        ),
        (
            snn.NLLLoss(weight=weight, reduction="sum"),
            torch.nn.NLLLoss(weight=weight, reduction="sum"),
            torch.log_softmax(logits, 1),
        ),
    ]
    for ours, reference, values in pairs:
        assert_close(ours(values, target), reference(values, target))
        assert "weight" in dict(ours.named_buffers())
    assert_close(snn.Softmax(1)(logits), torch.nn.Softmax(1)(logits))
    assert_close(snn.LogSoftmax(1)(logits), torch.nn.LogSoftmax(1)(logits))
    probs = torch.softmax(logits, 1)
    valid = torch.tensor([0, 1, 2, 3, 0, 1])
    assert_close(snn.OneHotMSELoss()(probs, valid), S.mse_onehot(probs, valid))
    assert_close(snn.MCEELoss(reduction="none")(probs, valid), S.mcee(probs, valid, "none"))


OPTION_GRID = list(itertools.product(["mean", "sum", "none"], [0.0, 0.5, 1.0]))


@pytest.mark.parametrize("reduction,label_smoothing", OPTION_GRID)
def test_module_and_function_agree(reduction, label_smoothing):
    from softclass import nn as snn

    logits, target = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    module = snn.CrossEntropyLoss(reduction=reduction, label_smoothing=label_smoothing)
    assert_close(
        module(logits, target),
        S.cross_entropy(logits, target, reduction=reduction, label_smoothing=label_smoothing),
    )
