"""Bad arguments to softclass.functional / softclass.nn: torch's error type, a clear message."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from softclass import functional as S
from softclass import nn as snn

LOGITS = torch.randn(3, 4)
TARGET = torch.tensor([0, 1, 2])

# (call, expected exception type, message pattern); each also fails in torch with the same type
# unless marked torch_type=None (softclass refuses what torch lets through or crashes on).
CASES = [
    (
        "label_smoothing > 1",
        lambda m: m.cross_entropy(LOGITS, TARGET, label_smoothing=1.5),
        RuntimeError,
        r"label_smoothing must be between 0.0 and 1.0. Got: 1.5",
        RuntimeError,
    ),
    (
        "unknown reduction",
        lambda m: m.cross_entropy(LOGITS, TARGET, reduction="avg"),
        ValueError,
        r"avg is not a valid value for reduction",
        ValueError,
    ),
    (
        "target above range",
        lambda m: m.cross_entropy(LOGITS, torch.tensor([0, 1, 4])),
        IndexError,
        r"Target 4 is out of bounds",
        IndexError,
    ),
    (
        "negative target",
        lambda m: m.nll_loss(LOGITS, torch.tensor([0, -1, 2])),
        IndexError,
        r"Target -1 is out of bounds",
        IndexError,
    ),
    (
        "batch mismatch",
        lambda m: m.cross_entropy(LOGITS, torch.tensor([0, 1])),
        ValueError,
        r"Expected input batch_size \(3\) to match target batch_size \(2\)",
        ValueError,
    ),
    (
        "float class indices",
        lambda m: m.cross_entropy(LOGITS, torch.tensor([0.0, 1.0, 2.0])),
        RuntimeError,
        r"expected target dtype to be Long or Byte, but got Float",
        RuntimeError,
    ),
    (
        "int32 class indices",
        lambda m: m.nll_loss(LOGITS, TARGET.int()),
        RuntimeError,
        r"expected target dtype to be Long or Byte, but got Int",
        RuntimeError,
    ),
    (
        "integer probability target",
        lambda m: m.cross_entropy(LOGITS, torch.zeros(3, 4).long()),
        RuntimeError,
        r"Expected floating point type for target with class probabilities, got Long",
        RuntimeError,
    ),
    (
        "ignore_index with probability target",
        lambda m: m.cross_entropy(LOGITS, torch.rand(3, 4), ignore_index=1),
        RuntimeError,
        r"ignore_index is not supported for floating point target",
        RuntimeError,
    ),
    (
        "weight of wrong size",
        lambda m: m.cross_entropy(LOGITS, TARGET, weight=torch.ones(3)),
        RuntimeError,
        r"weight tensor should be defined either for all 4 classes.*shape: \[3\]",
        RuntimeError,
    ),
    (
        "weight of wrong dtype",
        lambda m: m.nll_loss(LOGITS, TARGET, weight=torch.ones(4).double()),
        RuntimeError,
        r"expected scalar type Float but found Double",
        RuntimeError,
    ),
    (
        "multi-target",
        lambda m: m.cross_entropy(LOGITS, torch.zeros(3, 2).long()),
        RuntimeError,
        r"multi-target not supported",
        RuntimeError,
    ),
    (
        "K-dim target shape",
        lambda m: m.cross_entropy(torch.randn(2, 3, 4), torch.zeros(2, 5).long()),
        RuntimeError,
        r"Expected target size \[2, 4\], got \[2, 5\]",
        RuntimeError,
    ),
    (
        "0-d input",
        lambda m: m.nll_loss(torch.tensor(1.0), torch.tensor(0)),
        ValueError,
        r"Expected 1 or more dimensions \(got 0\)",
        ValueError,
    ),
    (
        "0-d cross entropy input, 0-d index target",
        lambda m: m.cross_entropy(torch.tensor(1.0), torch.tensor(0)),
        RuntimeError,
        r"Expected floating point type for target with class probabilities, got Long",
        RuntimeError,
    ),
    (
        "0-d cross entropy input, 0-d float target",
        lambda m: m.cross_entropy(torch.tensor(1.0), torch.tensor(0.5)),
        IndexError,
        r"input is 0-d; logits need a class dimension",
        IndexError,
    ),
    (
        "0-d cross entropy input, 1-d target",
        lambda m: m.cross_entropy(torch.tensor(1.0), torch.tensor([0])),
        IndexError,
        r"Dimension out of range",
        IndexError,
    ),
    (
        "integer logits",
        lambda m: m.cross_entropy(LOGITS.long(), TARGET),
        NotImplementedError,
        r"input must be a floating point tensor.*got torch.int64",
        NotImplementedError,
    ),
    (
        "integer softmax input",
        lambda m: m.softmax(LOGITS.long(), 1),
        NotImplementedError,
        r"softmax: input must be a floating point tensor",
        NotImplementedError,
    ),
    (
        "softmax dim out of range",
        lambda m: m.softmax(LOGITS, 2),
        IndexError,
        r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)",
        IndexError,
    ),
    (
        "logsumexp dim out of range",
        lambda m: (m.logsumexp if m is S else torch.logsumexp)(LOGITS, 3),
        IndexError,
        r"Dimension out of range",
        IndexError,
    ),
    (
        "target out of range in K-dim",
        lambda m: m.cross_entropy(torch.randn(2, 3, 4), torch.full((2, 4), 3)),
        IndexError,
        r"Target 3 is out of bounds",
        IndexError,
    ),
]


@pytest.mark.parametrize("name,call,error,pattern,torch_error", CASES, ids=[c[0] for c in CASES])
def test_error_matches_torch_type(name, call, error, pattern, torch_error):
    with pytest.raises(error, match=pattern):
        call(S)
    with pytest.raises(torch_error):
        call(F)


def test_out_of_range_message_names_position_and_bound():
    with pytest.raises(
        IndexError,
        match=r"Target 7 is out of bounds at position 2: expected class "
        r"indices in \[0, 3\] for 4 classes",
    ):
        S.cross_entropy(LOGITS, torch.tensor([0, 1, 7]))
    with pytest.raises(IndexError, match=r"at position \(1, 0\)"):
        S.cross_entropy(torch.randn(2, 3, 2), torch.tensor([[0, 1], [5, 0]]))


def test_non_tensor_arguments():
    with pytest.raises(TypeError, match=r"cross_entropy: input must be a torch.Tensor, got list"):
        S.cross_entropy([[1.0, 2.0]], TARGET)
    with pytest.raises(TypeError, match=r"nll_loss: target must be a torch.Tensor, got list"):
        S.nll_loss(LOGITS, [0, 1, 2])
    with pytest.raises(TypeError, match=r"CrossEntropyLoss: weight must be a torch.Tensor"):
        snn.CrossEntropyLoss(weight=[1.0, 2.0])


def test_empty_logsumexp_dim():
    with pytest.raises(RuntimeError, match=r"logsumexp: dim must name at least one dimension"):
        S.logsumexp(LOGITS, ())


def test_unbatched_input_with_batched_target():
    with pytest.raises(RuntimeError, match=r"Expected target to be 0D when input is 1D"):
        S.cross_entropy(torch.randn(4), torch.tensor([0, 1]))


def test_modules_check_options_where_torch_does():
    with pytest.raises(ValueError, match=r"avg is not a valid value for reduction"):
        snn.CrossEntropyLoss(reduction="avg")
    module = snn.CrossEntropyLoss(label_smoothing=2.0)  # torch checks it at the call
    with pytest.raises(RuntimeError, match=r"label_smoothing must be between 0.0 and 1.0"):
        module(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"sums is not a valid value for reduction"):
        snn.OneHotMSELoss(reduction="sums")


def test_one_hot_and_probability_loss_errors():
    probs = torch.softmax(torch.randn(3, 4), 1)
    with pytest.raises(ValueError, match=r"targets must be class indices of shape \[3\].*\[4\]"):
        S.mse_onehot(probs, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"one-hot targets must have the shape of probs \[3, 4\]"):
        S.mcee(probs, torch.zeros(3, 3))
    with pytest.raises(
        ValueError, match=r"probs must have shape \(N, C\) or \(C,\), got \[2, 3, 4\]"
    ):
        S.mse_onehot(torch.rand(2, 3, 4), torch.zeros(2, 3).long())
    with pytest.raises(IndexError, match=r"one_hot: Target 4 is out of bounds"):
        S.mse_onehot(probs, torch.tensor([0, 4, 1]))
    with pytest.raises(RuntimeError, match=r"one_hot: tensor must hold integer class indices"):
        S.one_hot(torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match=r"num_classes must be -1 or at least 1, got 0"):
        S.one_hot(torch.tensor([0]), 0)
    with pytest.raises(RuntimeError, match=r"cannot infer num_classes from an empty tensor"):
        S.one_hot(torch.zeros(0, dtype=torch.long))
    with pytest.raises(NotImplementedError, match=r"mcee: probs must be a floating point tensor"):
        S.mcee(torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 1]))


def test_device_mismatch_is_named():
    meta_target = torch.tensor([0, 1, 2], device="meta")
    with pytest.raises(
        RuntimeError, match=r"input and target must be on the same device, got cpu and meta"
    ):
        S.cross_entropy(LOGITS, meta_target)
