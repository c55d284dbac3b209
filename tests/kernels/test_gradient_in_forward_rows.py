"""The fused forward that writes the gradient of rows with many classes (more than the SIMD
tiles take) keeps the exps of its log-sum-exp pass in the gradient row and scales them: loss and
gradient against torch.nn.functional.cross_entropy for every option."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import softclass.functional as SF
from softclass.kernels import native

pytestmark = pytest.mark.skipif(native.library() is None, reason="needs the compiled loops")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("n_classes", [33, 517, 1500])
def test_rows_with_their_gradient_made_in_the_forward_match_torch(dtype, n_classes):
    generator = torch.Generator().manual_seed(n_classes)
    logits = (torch.randn(13, n_classes, generator=generator, dtype=torch.float64) * 4).to(dtype)
    logits[3, 5] = -float("inf")
    target = torch.randint(0, n_classes, (13,), generator=generator)
    target[::4] = 2
    weight = (torch.rand(n_classes, generator=generator, dtype=torch.float64) + 0.2).to(dtype)
    grid = itertools.product((None, weight), (-100, 2), ("mean", "sum", "none"), (0.0, 0.2))
    tolerance = {torch.bfloat16: dict(rtol=2e-2, atol=2e-3)}.get(dtype, {})
    for class_weight, ignore_index, reduction, smoothing in grid:
        options = dict(
            weight=class_weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=smoothing,
        )
        results = []
        for function in (SF.cross_entropy, F.cross_entropy):
            leaf = logits.clone().requires_grad_()
            loss = function(leaf, target, **options)
            grad_output = torch.rand(loss.shape, generator=torch.Generator().manual_seed(1))
            loss.backward(grad_output.to(loss.dtype))
            results.append((loss, leaf.grad))
        assert_close(results[0], results[1], **tolerance, msg=lambda m, o=options: f"{o}: {m}")
