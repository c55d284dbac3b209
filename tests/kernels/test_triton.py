"""Parity of the Triton cross-entropy kernels with torch.nn.functional.cross_entropy.

Without a CUDA device the kernels run on CPU tensors in Triton's interpreter: TRITON_INTERPRET=1
must be set before the kernels are decorated, so it is set here before the module is imported
(and the module is reloaded if another test imported it first). With CUDA the same tests run
compiled on the GPU; tests marked ``gpu`` need CUDA.

Block sizes are made tiny (16 / 8 columns) so that small shapes cover the multi-block loop, a
partial last block and C just past a block boundary.
"""

import importlib
import os
import warnings

import pytest
import torch
import torch.nn.functional as F

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

pytest.importorskip(
    "triton", reason="triton is not installed (Linux-only wheels; install the '.[test]' extra)"
)

from softclass.kernels import triton as kernels  # noqa: E402 (after TRITON_INTERPRET)

if not HAS_CUDA and not kernels._INTERPRETER:
    kernels = importlib.reload(kernels)

DEVICE = "cuda" if HAS_CUDA else "cpu"
N_ROWS, N_CLASSES = 7, 37
REDUCTIONS = ["none", "mean", "sum"]
gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def tiny_blocks(monkeypatch):
    monkeypatch.setattr(kernels, "FORWARD_BLOCK_MAX", 16)
    monkeypatch.setattr(kernels, "BACKWARD_BLOCK_MAX", 8)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tolerances(dtype: torch.dtype) -> dict:
    """fp32 kernels vs fp32 torch: default; bf16 result vs the fp32 reference: bf16 rounding."""
    if dtype == torch.float32:
        return {}
    return {"rtol": 1.6e-2 if dtype == torch.bfloat16 else 2e-3, "atol": 1e-5}


def _class_targets(n_rows, n_classes, ignored_class, seed):
    targets = torch.randint(0, n_classes, (n_rows,), generator=_generator(seed))
    if ignored_class is not None:
        targets[::3] = ignored_class
    return targets


def _grad_output(loss: torch.Tensor, seed: int) -> torch.Tensor:
    """A non-uniform incoming gradient (not all ones) shaped like ``loss``."""
    return torch.rand(loss.shape, generator=_generator(seed)).to(loss.device) + 0.5


def _loss_and_grads(loss_fn, logits, target, grad_seed):
    """loss, d logits (and d target when it requires grad) for a random grad_output."""
    loss = loss_fn(logits, target)
    grad_output = _grad_output(loss, grad_seed)
    inputs = [logits] + ([target] if target.requires_grad else [])
    grads = torch.autograd.grad(loss, inputs, grad_output.to(loss.dtype))
    return loss, grads


def _check_parity(logits_fp32, target, dtype, weight=None, **options):
    """Kernel on ``dtype`` logits vs torch on the fp32 logits: loss and gradients."""
    logits = logits_fp32.to(DEVICE, dtype).requires_grad_()
    reference_logits = logits.detach().float().requires_grad_()
    target = target.to(DEVICE)
    kernel_weight = weight.to(DEVICE, dtype) if weight is not None else None
    reference_weight = kernel_weight.float() if weight is not None else None

    def ours(x, t):
        return kernels.fused_cross_entropy(x, t, kernel_weight, **options)

    def reference(x, t):
        return F.cross_entropy(x, t, reference_weight, **options)

    reference_target = target.float() if target.is_floating_point() else target
    loss, grads = _loss_and_grads(ours, logits, target, grad_seed=5)
    expected_loss, expected_grads = _loss_and_grads(
        reference, reference_logits, reference_target, 5
    )
    assert loss.dtype == dtype
    torch.testing.assert_close(loss.float(), expected_loss, **_tolerances(dtype))
    for grad, expected in zip(grads, expected_grads, strict=True):
        assert grad.dtype == dtype
        torch.testing.assert_close(grad.float(), expected, **_tolerances(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("ignored_class", [None, 3])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_targets_match_torch(reduction, weighted, ignored_class, label_smoothing, dtype):
    logits = torch.randn(N_ROWS, N_CLASSES, generator=_generator(0)) * 3
    target = _class_targets(N_ROWS, N_CLASSES, ignored_class, seed=1)
    weight = torch.rand(N_CLASSES, generator=_generator(2)) + 0.5 if weighted else None
    options = {"reduction": reduction, "label_smoothing": label_smoothing}
    if ignored_class is not None:
        options["ignore_index"] = ignored_class  # a real class id: still in every softmax
    _check_parity(logits, target, dtype, weight, **options)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_probability_targets_match_torch_including_target_grad(
    reduction, weighted, label_smoothing
):
    logits = torch.randn(N_ROWS, N_CLASSES, generator=_generator(0)) * 3
    target = torch.softmax(torch.randn(N_ROWS, N_CLASSES, generator=_generator(1)), dim=1)
    weight = torch.rand(N_CLASSES, generator=_generator(2)) + 0.5 if weighted else None
    _check_parity(
        logits,
        target.requires_grad_(),
        torch.float32,
        weight,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_probability_targets(dtype):
    logits = torch.randn(N_ROWS, N_CLASSES, generator=_generator(0)) * 3
    target = torch.softmax(torch.randn(N_ROWS, N_CLASSES, generator=_generator(1)), dim=1)
    _check_parity(logits, target.to(dtype), dtype, label_smoothing=0.1)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float16_class_targets(reduction):
    logits = torch.randn(N_ROWS, N_CLASSES, generator=_generator(0)) * 3
    target = _class_targets(N_ROWS, N_CLASSES, 3, seed=1)
    weight = torch.rand(N_CLASSES, generator=_generator(2)) + 0.5
    options = {"reduction": reduction, "ignore_index": 3, "label_smoothing": 0.1}
    _check_parity(logits, target, torch.float16, weight, **options)


@pytest.mark.parametrize(
    ("n_rows", "n_classes"),
    [(1, 1), (1, 2), (3, 8), (2, 16), (2, 17), (4, 31), (3, 33)],
)
def test_awkward_shapes(n_rows, n_classes):
    """N=1, C=1, C equal to a block, just past one, prime C."""
    logits = torch.randn(n_rows, n_classes, generator=_generator(n_classes))
    target = _class_targets(n_rows, n_classes, None, seed=n_classes)
    weight = torch.rand(n_classes, generator=_generator(1)) + 0.5
    for reduction in REDUCTIONS:
        _check_parity(logits, target, torch.float32, weight, reduction=reduction)


def test_all_ignored_mean_is_nan_with_zero_gradient():
    logits = torch.randn(4, 10, generator=_generator(0), device="cpu").to(DEVICE)
    logits.requires_grad_()
    target = torch.full((4,), -100, device=DEVICE)
    loss = kernels.fused_cross_entropy(logits, target, label_smoothing=0.1)
    loss.backward()
    assert torch.isnan(loss)
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    summed = kernels.fused_cross_entropy(logits.detach(), target, reduction="sum")
    assert summed.item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_extreme_logits(dtype):
    """Large offsets, ±1e4 spreads and -inf (non-target) logits stay finite and exact."""
    logits = torch.randn(5, N_CLASSES, generator=_generator(0))
    logits[0] += 1e4
    logits[1, 0] = 1e4
    logits[1, 1] = -1e4
    logits[2, 5:9] = float("-inf")
    logits[3] *= 200
    target = torch.tensor([1, 0, 2, 3, 4])
    _check_parity(logits, target, dtype, reduction="none")


def test_confident_true_class_gradient_in_bfloat16():
    """softmax(x_y) → 1: d/dx_y = p_y - 1 must not cancel in bf16 (Liger-Kernel PR #1329)."""
    logits = torch.zeros(4, N_CLASSES)
    target = torch.tensor([0, 1, 2, 3])
    for row, gap in enumerate([5.0, 7.0, 9.0, 11.0]):  # p_y ≈ 0.80 … 0.9995
        logits[row, target[row]] = gap
    logits_bf16 = logits.to(DEVICE, torch.bfloat16).requires_grad_()
    kernels.fused_cross_entropy(logits_bf16, target.to(DEVICE), reduction="sum").backward()
    reference = logits.to(DEVICE).requires_grad_()
    F.cross_entropy(reference, target.to(DEVICE), reduction="sum").backward()
    rows = torch.arange(4)
    true_class_grad = logits_bf16.grad[rows, target].float()
    torch.testing.assert_close(true_class_grad, reference.grad[rows, target], rtol=8e-3, atol=0)


def test_default_backward_leaves_logits_unchanged():
    logits = torch.randn(N_ROWS, N_CLASSES, generator=_generator(0)).to(DEVICE).requires_grad_()
    before = logits.detach().clone()
    target = _class_targets(N_ROWS, N_CLASSES, None, seed=1).to(DEVICE)
    kernels.fused_cross_entropy(logits, target).backward()
    assert torch.equal(logits.detach(), before)
    assert not torch.equal(logits.grad, torch.zeros_like(logits.grad))


def test_inplace_backward_writes_the_gradient_over_the_logits():
    source = torch.randn(N_ROWS, N_CLASSES, generator=_generator(0)).to(DEVICE).requires_grad_()
    target = _class_targets(N_ROWS, N_CLASSES, 3, seed=1).to(DEVICE)
    logits = source.clone()  # a non-leaf buffer the loss may overwrite
    kernels.fused_cross_entropy(
        logits, target, ignore_index=3, label_smoothing=0.1, inplace_backward=True
    ).backward()
    reference = source.detach().clone().requires_grad_()
    F.cross_entropy(reference, target, ignore_index=3, label_smoothing=0.1).backward()
    torch.testing.assert_close(source.grad, reference.grad)
    torch.testing.assert_close(logits.detach(), reference.grad)


def test_inplace_backward_fails_loudly_when_the_logits_are_saved_elsewhere():
    """exp saves its output; overwriting it must raise, not feed gradients to ExpBackward."""
    source = torch.randn(3, 10, generator=_generator(0)).to(DEVICE).requires_grad_()
    logits = source.exp()
    target = torch.tensor([1, 2, 3], device=DEVICE)
    loss = kernels.fused_cross_entropy(logits, target, inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_non_contiguous_logits_rows():
    wide = torch.randn(N_ROWS, 2 * N_CLASSES, generator=_generator(0))
    logits = wide[:, :N_CLASSES]  # row stride 2C, column stride 1
    target = _class_targets(N_ROWS, N_CLASSES, None, seed=1)
    _check_parity(logits, target, torch.float32, reduction="mean")


def test_triton_available_here():
    assert kernels.triton_available()


@pytest.fixture
def kernels_unusable_on_cpu(monkeypatch):
    """As on a machine where CPU tensors cannot reach the kernels (no interpreter mode)."""
    monkeypatch.setattr(kernels, "_INTERPRETER", False)
    monkeypatch.setattr(kernels, "_fallback_warned", False)


def test_fallback_warns_once_and_matches_torch(kernels_unusable_on_cpu):
    logits = torch.randn(N_ROWS, N_CLASSES, generator=_generator(0))
    target = _class_targets(N_ROWS, N_CLASSES, None, seed=1)
    with pytest.warns(RuntimeWarning, match=r"Triton kernels unavailable \(tensors on cpu"):
        loss = kernels.fused_cross_entropy(logits, target, label_smoothing=0.2)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target, label_smoothing=0.2))
    hidden = torch.randn(N_ROWS, 8, generator=_generator(2))
    weight = torch.randn(N_CLASSES, 8, generator=_generator(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        linear_loss = kernels.linear_cross_entropy(hidden, weight, target, reduction="sum")
    torch.testing.assert_close(
        linear_loss, F.cross_entropy(hidden @ weight.T, target, reduction="sum")
    )


# Linear + cross entropy: N=11, H=8, C=37 gives row chunks of 4, 4, 3.
HIDDEN_SIZE = 8
LINEAR_ROWS = 11


@pytest.fixture
def one_block_per_row(monkeypatch):
    """The column loop is covered above; here fewer interpreted programs keep the tests quick."""
    monkeypatch.setattr(kernels, "FORWARD_BLOCK_MAX", 64)
    monkeypatch.setattr(kernels, "BACKWARD_BLOCK_MAX", 64)


def _linear_case(dtype, with_bias, seed=0):
    hidden = torch.randn(LINEAR_ROWS, HIDDEN_SIZE, generator=_generator(seed))
    weight = torch.randn(N_CLASSES, HIDDEN_SIZE, generator=_generator(seed + 1)) / 2
    bias = torch.randn(N_CLASSES, generator=_generator(seed + 2)) if with_bias else None
    return [
        t.to(DEVICE, dtype).requires_grad_() if t is not None else None
        for t in (hidden, weight, bias)
    ]


@pytest.mark.parametrize("target_kind", ["index", "probability"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_linear_cross_entropy_matches_torch(reduction, with_bias, target_kind, one_block_per_row):
    assert kernels._linear_chunk_rows(LINEAR_ROWS, N_CLASSES, HIDDEN_SIZE) == 4
    params = _linear_case(torch.float32, with_bias)
    reference_params = [
        p.detach().clone().requires_grad_() if p is not None else None for p in params
    ]
    if target_kind == "index":
        target = _class_targets(LINEAR_ROWS, N_CLASSES, 3, seed=4).to(DEVICE)
        options = {"ignore_index": 3}
    else:
        target = torch.softmax(torch.randn(LINEAR_ROWS, N_CLASSES, generator=_generator(4)), 1)
        target = target.to(DEVICE)
        options = {}
    class_weight = (torch.rand(N_CLASSES, generator=_generator(5)) + 0.5).to(DEVICE)
    options.update(reduction=reduction, label_smoothing=0.1)

    hidden, weight, bias = params
    loss = kernels.linear_cross_entropy(hidden, weight, target, bias, class_weight, **options)
    r_hidden, r_weight, r_bias = reference_params
    expected = F.cross_entropy(
        F.linear(r_hidden, r_weight, r_bias), target, class_weight, **options
    )
    grad_output = _grad_output(loss, seed=6)
    loss.backward(grad_output)
    expected.backward(grad_output)
    torch.testing.assert_close(loss, expected)
    for param, reference in zip(params, reference_params, strict=True):
        if param is not None:
            torch.testing.assert_close(param.grad, reference.grad)


def test_linear_cross_entropy_bfloat16_and_partial_grads(one_block_per_row):
    """bf16 vs the fp32 reference; only the weight requires grad."""
    hidden, weight, bias = _linear_case(torch.bfloat16, with_bias=True)
    hidden.requires_grad_(False)
    bias.requires_grad_(False)
    target = _class_targets(LINEAR_ROWS, N_CLASSES, None, seed=4).to(DEVICE)
    loss = kernels.linear_cross_entropy(hidden, weight, target, bias)
    loss.backward()
    reference_weight = weight.detach().float().requires_grad_()
    expected = F.cross_entropy(F.linear(hidden.float(), reference_weight, bias.float()), target)
    expected.backward()
    assert loss.dtype == torch.bfloat16 and weight.grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss.float(), expected, rtol=1.6e-2, atol=1e-5)
    torch.testing.assert_close(weight.grad.float(), reference_weight.grad, rtol=2e-2, atol=2e-3)


def test_linear_cross_entropy_without_grad(one_block_per_row):
    hidden, weight, bias = _linear_case(torch.float32, with_bias=True)
    target = _class_targets(LINEAR_ROWS, N_CLASSES, None, seed=4).to(DEVICE)
    with torch.no_grad():
        loss = kernels.linear_cross_entropy(hidden, weight, target, bias, reduction="none")
    expected = F.cross_entropy(F.linear(hidden, weight, bias), target, reduction="none")
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, expected.detach())


@pytest.mark.gpu
@gpu
def test_no_host_sync_in_the_loss_path(monkeypatch):
    logits = torch.randn(64, 1000, device="cuda", requires_grad=True)
    target = torch.randint(0, 1000, (64,), device="cuda")
    weight = torch.rand(1000, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = kernels.fused_cross_entropy(logits, target, weight, label_smoothing=0.1)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    expected = F.cross_entropy(logits.detach(), target, weight, label_smoothing=0.1)
    torch.testing.assert_close(loss.detach(), expected)


@pytest.mark.gpu
@gpu
def test_more_than_2_31_elements(monkeypatch):
    """16 640 × 131 072 bf16 = 2.18e9 elements: int32 row offsets would overflow."""
    monkeypatch.setattr(kernels, "FORWARD_BLOCK_MAX", 16384)
    monkeypatch.setattr(kernels, "BACKWARD_BLOCK_MAX", 4096)
    n_rows, n_classes = 16640, 131072
    logits = torch.randn(n_rows, n_classes, device="cuda", dtype=torch.bfloat16)
    logits.requires_grad_()
    target = torch.randint(0, n_classes, (n_rows,), device="cuda")
    loss = kernels.fused_cross_entropy(logits, target, reduction="none")
    loss.sum().backward()
    last = slice(n_rows - 4, n_rows)
    tail = logits.detach()[last].float().requires_grad_()
    expected = F.cross_entropy(tail, target[last], reduction="none")
    expected.sum().backward()
    torch.testing.assert_close(loss[last].float(), expected.detach(), rtol=1.6e-2, atol=1e-5)
    torch.testing.assert_close(logits.grad[last].float(), tail.grad, rtol=1.6e-2, atol=1e-5)


def test_cuda_tensors_dispatch_to_triton_or_warn_once(monkeypatch):
    """CUDA inputs take the Triton kernel when it can run, else the plain path with one warning."""
    from softclass.kernels import dispatch

    class FakeCuda:
        is_cuda = True

    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    assert dispatch.cross_entropy_kernel(FakeCuda(), None, False) is kernels.fused_cross_entropy
    monkeypatch.setattr(kernels, "triton_available", lambda: False)
    monkeypatch.setattr(dispatch, "_warned_no_triton", False)
    with pytest.warns(RuntimeWarning, match=r"Triton is not importable"):
        assert dispatch.cross_entropy_kernel(FakeCuda(), None, False) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dispatch.cross_entropy_kernel(FakeCuda(), None, False) is None
