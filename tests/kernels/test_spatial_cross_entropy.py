"""The cross entropy of (N, C, d1, ...) logits in their own layout (kernels/spatial_loops.h,
kernels/spatial_cross_entropy_cpu.py) against torch.nn.functional.cross_entropy."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import softclass.functional as SF
from softclass.kernels import native
from softclass.kernels import spatial_cross_entropy_cpu as spatial

pytestmark = pytest.mark.skipif(
    native.library() is None, reason="the compiled library is needed for the spatial loops"
)

SHAPES = [(2, 3, 5), (3, 7, 4, 5), (2, 21, 9, 13), (1, 40, 3, 3, 2), (2, 600, 7), (3, 1, 4)]
TOLERANCE = {torch.float32: 2e-5, torch.float64: 1e-12}


def _case(shape, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=generator, dtype=dtype) * 3
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=generator)
    return logits, target


def _both(logits, target, grad_seed=1, **options):
    """(loss, gradient) of torch's and softclass's cross entropy for the same grad_output."""
    results = []
    for function in (F.cross_entropy, SF.cross_entropy):
        leaf = logits.clone().requires_grad_()
        loss = function(leaf, target, **options)
        grad_output = torch.randn(
            loss.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=loss.dtype
        )
        loss.backward(grad_output)
        results.append((loss.detach(), leaf.grad))
    return results


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_gradient_match_torch_for_every_option(shape, dtype):
    logits, target = _case(shape, dtype)
    target.view(-1)[::3] = min(1, shape[1] - 1)  # some rows ignored when ignore_index=1
    weight = torch.rand(shape[1], generator=torch.Generator().manual_seed(2), dtype=dtype)
    tolerance = TOLERANCE[dtype]
    grid = itertools.product((None, weight), (-100, 1), ("mean", "sum", "none"), (0.0, 0.2))
    for class_weight, ignore_index, reduction, smoothing in grid:
        options = dict(
            weight=class_weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=smoothing,
        )
        (expected, expected_grad), (loss, grad) = _both(logits, target, **options)
        assert loss.shape == expected.shape and loss.dtype == expected.dtype, options
        torch.testing.assert_close(loss, expected, rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(grad, expected_grad, rtol=tolerance, atol=tolerance)
        assert grad.is_contiguous()


def test_the_spatial_loops_compute_it(monkeypatch):
    calls = []
    original = spatial.cross_entropy
    monkeypatch.setattr(spatial, "cross_entropy", lambda *a: calls.append(1) or original(*a))
    logits, target = _case((2, 5, 6, 7), torch.float32)
    weight = torch.rand(5)  # a class weight: not the lean road's common call
    torch.testing.assert_close(
        SF.cross_entropy(logits, target, weight), F.cross_entropy(logits, target, weight)
    )
    assert calls == [1]
    # non-contiguous logits go the 2-D way (and agree)
    transposed = logits.transpose(2, 3)
    torch.testing.assert_close(
        SF.cross_entropy(transposed, target.transpose(1, 2)),
        F.cross_entropy(transposed, target.transpose(1, 2)),
    )
    assert calls == [1]


def test_bfloat16_close_to_torch():
    logits, target = _case((2, 9, 8, 11), torch.bfloat16)
    (expected, expected_grad), (loss, grad) = _both(logits, target, label_smoothing=0.1)
    torch.testing.assert_close(loss.float(), expected.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grad.float(), expected_grad.float(), rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_second_backward_and_double_backward(reduction):
    logits, target = _case((2, 5, 4, 3), torch.float64)
    logits.requires_grad_()
    expected_loss = F.cross_entropy(logits, target, reduction=reduction)
    grad_output = torch.ones_like(expected_loss) * 0.5
    (expected,) = torch.autograd.grad(expected_loss, logits, grad_output, create_graph=True)
    loss = SF.cross_entropy(logits, target, reduction=reduction)
    first = torch.autograd.grad(loss, logits, grad_output, retain_graph=True)[0]
    second = torch.autograd.grad(loss, logits, grad_output, retain_graph=True)[0]
    torch.testing.assert_close(first, expected.detach())
    torch.testing.assert_close(second, expected.detach())
    (graph,) = torch.autograd.grad(loss, logits, grad_output, create_graph=True)
    torch.testing.assert_close(graph, expected)
    (hessian_row,) = torch.autograd.grad(graph.square().sum(), logits)
    (expected_row,) = torch.autograd.grad(expected.square().sum(), logits)
    torch.testing.assert_close(hessian_row, expected_row)


def test_second_backward_of_bfloat16_logits_with_class_weights():
    """The backward's class weights converted to fp32 stay alive for the whole compiled call (a
    converted copy freed before the call once gave a garbage second gradient)."""
    logits, target = _case((3, 7, 5, 4), torch.bfloat16)
    weight = torch.rand(7, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    logits.requires_grad_()
    for reduction in ("mean", "sum"):
        loss = SF.cross_entropy(logits, target, weight=weight, reduction=reduction)
        first = torch.autograd.grad(loss, logits, retain_graph=True)[0]
        second = torch.autograd.grad(loss, logits)[0]
        torch.testing.assert_close(second.float(), first.float(), rtol=2e-2, atol=1e-3)


def test_logits_changed_in_place_after_the_loss():
    logits, target = _case((2, 4, 5, 5), torch.float32)
    expected = F.cross_entropy(logits.clone().requires_grad_(), target)
    leaf = logits.clone().requires_grad_()
    computed = leaf * 1
    loss = SF.cross_entropy(computed, target)
    torch.testing.assert_close(loss, expected)
    with torch.no_grad():
        computed.add_(1.0)
    loss.backward(retain_graph=True)  # the gradient was made in the forward
    reference = logits.clone().requires_grad_()
    F.cross_entropy(reference, target).backward()
    torch.testing.assert_close(leaf.grad, reference.grad)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_target_out_of_range_names_its_position():
    logits, target = _case((2, 5, 4, 3), torch.float32)
    target[1, 2, 0] = 7
    with pytest.raises(IndexError, match=r"Target 7 is out of bounds at position \(1, 2, 0\)"):
        SF.cross_entropy(logits, target)
    target[1, 2, 0] = -100
    torch.testing.assert_close(SF.cross_entropy(logits, target), F.cross_entropy(logits, target))


def test_without_gradient_and_with_uint8_targets():
    logits, target = _case((3, 6, 10, 2), torch.float32)
    with torch.no_grad():
        loss = SF.cross_entropy(logits, target.to(torch.uint8), reduction="sum")
    torch.testing.assert_close(loss, F.cross_entropy(logits, target, reduction="sum"))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradient_computed_in_the_backward(reduction):
    """The two-pass path: the forward writes no gradient, the backward computes it from the
    saved logits and log-sum-exps (the 'mean' divisor from the forward's reduction)."""
    logits, target = _case((2, 6, 5, 3), torch.float64)
    weight = torch.rand(6, dtype=torch.float64)
    options = dict(weight=weight, reduction=reduction, ignore_index=2, label_smoothing=0.1)
    leaf = logits.clone().requires_grad_()
    loss = spatial.SpatialCrossEntropyFunction.apply(
        leaf, target.reshape(-1), weight, 2, reduction, 0.1, False
    )
    reference = logits.clone().requires_grad_()
    expected = F.cross_entropy(reference, target, **options)
    torch.testing.assert_close(loss, expected)
    grad_output = torch.rand_like(expected)
    loss.backward(grad_output)
    expected.backward(grad_output)
    torch.testing.assert_close(leaf.grad, reference.grad)
