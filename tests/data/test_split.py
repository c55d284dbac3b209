"""The split's grouping of rows by class: numpy's radix sort and torch's stable sort agree."""

from __future__ import annotations

import pytest
import torch

from softclass.data.split import _rows_by_class, stratified_split


@pytest.mark.parametrize("high", [3, 40_000, 70_000])
def test_rows_by_class_is_a_stable_sort_by_class(high):
    targets = torch.randint(0, high, (5_000,), generator=torch.Generator().manual_seed(high))
    by_class, counts = _rows_by_class(targets)
    assert torch.equal(by_class, torch.sort(targets, stable=True).indices)
    assert counts == torch.unique(targets, return_counts=True)[1].tolist()


def test_negative_class_indices_split_as_before():
    targets = torch.tensor([3, 3, 3, -7, -7, 1, 9, 9, 9, 9])
    train, validation = stratified_split(targets, 0.3, 0)
    assert torch.equal(torch.sort(torch.cat([train, validation])).values, torch.arange(10))
    assert sorted(targets[validation].tolist()) == [-7, 3, 9]
