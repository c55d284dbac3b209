import torch

from softclass.training.batching import batch_bounds, epoch_permutation


def test_permutation_depends_only_on_seed_and_epoch():
    first = epoch_permutation(50, seed=3, epoch=2)
    assert torch.equal(first, epoch_permutation(50, seed=3, epoch=2))
    assert not torch.equal(first, epoch_permutation(50, seed=3, epoch=3))
    assert not torch.equal(first, epoch_permutation(50, seed=4, epoch=2))
    assert sorted(first.tolist()) == list(range(50))
    assert epoch_permutation(5, 0, 0, shuffle=False).tolist() == [0, 1, 2, 3, 4]


def test_batch_bounds_cover_all_rows_once():
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(8, 4) == [(0, 4), (4, 8)]
    assert batch_bounds(0, 4) == []
