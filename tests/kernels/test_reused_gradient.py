"""The reused gradient block of the compiled loops (cpu_native.c's gradient_block_*, through
softclass.kernels.native.empty_gradient): a large gradient freed by one training step is the
memory of the next step's gradient (no page faults of fresh memory), never memory still in use,
and the numbers are those of a fresh tensor."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import softclass.functional as SF
from softclass.kernels import native

pytestmark = pytest.mark.skipif(native.library() is None, reason="needs the compiled loops")

# 2048 × 8200 fp32 = 67 MB: above the size from which the block is used.
SHAPE = (2048, 8200)


@pytest.fixture(autouse=True)
def no_kept_block():
    native.drop_kept_gradient()
    yield
    native.drop_kept_gradient()


def _span(tensor: torch.Tensor) -> tuple[int, int]:
    start = tensor.data_ptr()
    return start, start + tensor.numel() * tensor.element_size()


def test_a_block_in_use_is_never_handed_out_again_and_a_released_one_is():
    first = native.empty_gradient(SHAPE, torch.float32)
    second = native.empty_gradient(SHAPE, torch.float32)
    (a_start, a_end), (b_start, b_end) = _span(first), _span(second)
    assert a_end <= b_start or b_end <= a_start  # disjoint while both are alive
    second.fill_(7.0)
    address = first.data_ptr()
    del first
    third = native.empty_gradient(SHAPE, torch.float32)
    assert third.data_ptr() == address
    third.fill_(-1.0)
    assert bool((second == 7.0).all())
    assert third.shape == SHAPE and third.dtype == torch.float32 and third.is_contiguous()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_a_kept_block_serves_requests_it_holds_and_small_ones_are_torch_s(dtype):
    rows = SHAPE[0] * 2 if dtype == torch.bfloat16 else SHAPE[0]
    larger = native.empty_gradient((rows + 1, SHAPE[1]), dtype)
    assert larger.dtype == dtype and larger.shape == (rows + 1, SHAPE[1])
    assert not larger.untyped_storage().resizable()  # the block, not torch's allocation
    address = larger.data_ptr()
    del larger
    small = native.empty_gradient((8, 8), dtype)  # below the size: torch's own tensor
    assert small.untyped_storage().resizable() and small.shape == (8, 8) and small.dtype == dtype
    fitting = native.empty_gradient((rows, SHAPE[1]), dtype)
    assert fitting.data_ptr() == address and fitting.shape == (rows, SHAPE[1])
    fitting.fill_(3.0)
    assert bool((fitting == 3.0).all())


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("SOFTCLASS_REUSE_GRADIENT", "0")
    plain = native.empty_gradient(SHAPE, torch.float32)
    assert plain.untyped_storage().resizable() and plain.shape == SHAPE


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_training_steps_reuse_the_gradient_and_match_torch(dtype):
    generator = torch.Generator().manual_seed(0)
    n_rows = SHAPE[0] * 2 if dtype == torch.bfloat16 else SHAPE[0]
    logits = torch.randn(n_rows, SHAPE[1], generator=generator).to(dtype).requires_grad_()
    target = torch.randint(0, SHAPE[1], (n_rows,), generator=generator)
    target[::7] = -100
    addresses, gradients = [], []
    for _ in range(3):
        (SF.cross_entropy(logits, target) * 2.0).backward()
        addresses.append(logits.grad.data_ptr())
        gradients.append(logits.grad.clone())
        logits.grad = None
    assert addresses[1] == addresses[0] and addresses[2] == addresses[0]
    assert torch.equal(gradients[0], gradients[1]) and torch.equal(gradients[0], gradients[2])
    reference = logits.detach().clone().requires_grad_()
    (F.cross_entropy(reference, target) * 2.0).backward()
    tolerance = {torch.bfloat16: dict(rtol=2e-2, atol=2e-3)}.get(dtype, {})
    assert_close(gradients[0], reference.grad, **tolerance)


def test_a_kept_gradient_accumulates_as_torch_s_does():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(SHAPE, generator=generator).requires_grad_()
    target = torch.randint(0, SHAPE[1], (SHAPE[0],), generator=generator)
    SF.cross_entropy(logits, target).backward()
    SF.cross_entropy(logits, target, reduction="sum").backward()  # accumulates into the first
    reference = logits.detach().clone().requires_grad_()
    F.cross_entropy(reference, target).backward()
    F.cross_entropy(reference, target, reduction="sum").backward()
    assert_close(logits.grad, reference.grad)


def test_a_torch_that_refuses_the_block_gets_its_own_tensors_and_the_block_is_kept(monkeypatch):
    kept = native.empty_gradient(SHAPE, torch.float32)
    address = kept.data_ptr()
    del kept  # now the kept block

    def refuse(capsule):
        raise RuntimeError("no DLPack here")

    monkeypatch.setattr(torch.utils.dlpack, "from_dlpack", refuse)
    monkeypatch.setattr(native, "_dlpack_refused", [])
    with pytest.warns(RuntimeWarning, match="refused the reused gradient block.*no DLPack here"):
        tensor = native.empty_gradient(SHAPE, torch.float32)
    assert tensor.shape == SHAPE and tensor.untyped_storage().resizable()  # torch's allocation
    again = native.empty_gradient(SHAPE, torch.float32)  # said once, torch's from now on
    assert again.untyped_storage().resizable()
    monkeypatch.undo()
    # The block handed out before the refusal went back to the library, not lost.
    back = native.empty_gradient(SHAPE, torch.float32)
    assert back.data_ptr() == address
