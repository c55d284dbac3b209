"""Properties of the math that must hold for every input (hypothesis)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from softclass import functional as S

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def logit_batches(draw, min_classes=1):
    """(logits (N, C) float64, targets (N,) int64) with N in [1, 16], C in [min_classes, 12]."""
    n_rows = draw(st.integers(1, 16))
    n_classes = draw(st.integers(min_classes, 12))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e3]))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_rows, n_classes, generator=generator, dtype=torch.float64) * scale
    targets = torch.randint(0, n_classes, (n_rows,), generator=generator)
    return logits, targets


@SETTINGS
@given(logit_batches(), st.floats(-1e4, 1e4, allow_nan=False))
def test_softmax_rows_sum_to_one_and_are_shift_invariant(batch, shift):
    logits, _ = batch
    probs = S.softmax(logits, 1)
    assert torch.all(probs >= 0) and torch.all(probs <= 1)
    assert_close(probs.sum(1), torch.ones(len(logits), dtype=torch.float64))
    assert_close(S.softmax(logits + shift, 1), probs, atol=1e-9, rtol=1e-6)


@SETTINGS
@given(logit_batches())
def test_log_softmax_is_never_positive_and_matches_log_of_softmax_where_normal(batch):
    logits, _ = batch
    log_probs = S.log_softmax(logits, 1)
    assert torch.all(log_probs <= 0)
    probs = S.softmax(logits, 1)
    normal = probs > torch.finfo(torch.float64).tiny  # subnormal probabilities lose precision
    assert_close(log_probs[normal], torch.log(probs[normal]), atol=1e-9, rtol=1e-6)


@SETTINGS
@given(logit_batches(), st.floats(0.0, 1.0), st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy_is_non_negative_and_gradient_rows_sum_to_zero(batch, smoothing, reduction):
    logits, targets = batch
    leaf = logits.clone().requires_grad_()
    loss = S.cross_entropy(leaf, targets, label_smoothing=smoothing, reduction=reduction)
    assert torch.all(loss >= 0)
    loss.sum().backward()
    assert_close(leaf.grad.sum(1), torch.zeros(len(logits), dtype=torch.float64), atol=1e-9, rtol=0)


@SETTINGS
@given(logit_batches(min_classes=2), st.sampled_from([1.0, 1e2, 1e4, 1e6]))
def test_results_finite_wherever_torch_is(batch, scale):
    logits, targets = batch
    logits = (logits * scale).float()
    for ours, reference in (
        (
            S.cross_entropy(logits, targets, reduction="none"),
            F.cross_entropy(logits, targets, reduction="none"),
        ),
        (S.log_softmax(logits, 1), F.log_softmax(logits, 1)),
        (S.softmax(logits, 1), F.softmax(logits, 1)),
        (S.logsumexp(logits, 1), torch.logsumexp(logits, 1)),
    ):
        assert torch.equal(torch.isfinite(ours), torch.isfinite(reference))
        assert_close(ours, reference, rtol=1e-5, atol=1e-5 * scale)


@SETTINGS
@given(logit_batches(min_classes=2))
def test_nll_of_log_softmax_equals_cross_entropy(batch):
    logits, targets = batch
    assert_close(S.nll_loss(S.log_softmax(logits, 1), targets), S.cross_entropy(logits, targets))
