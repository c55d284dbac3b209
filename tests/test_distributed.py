"""torch.distributed helpers: the single-process context and the sharding arithmetic."""

import pytest
import torch

from softclass.distributed import DistContext, loss_scale, setup, shard_rows
from softclass.errors import ConfigError


def test_single_process_without_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = setup(device="cpu")
    assert not context.enabled and context.is_main and context.device.type == "cpu"
    rows = torch.arange(10)
    assert torch.equal(shard_rows(rows, context), rows)


def test_shards_cover_the_global_batch_once():
    rows = torch.tensor([7, 3, 9, 1, 4])
    shards = [shard_rows(rows, DistContext(rank=r, world_size=2)) for r in range(2)]
    assert shards[0].tolist() == [7, 9, 4] and shards[1].tolist() == [3, 1]
    assert sorted(torch.cat(shards).tolist()) == sorted(rows.tolist())


def test_scaled_shard_sums_average_to_the_global_mean():
    losses = torch.tensor([0.5, 1.5, 2.0, 4.0, 1.0])
    world = 2
    per_rank = [
        losses[shard_rows(torch.arange(5), DistContext(rank=r, world_size=world))].sum()
        * loss_scale(5, DistContext(rank=r, world_size=world))
        for r in range(world)
    ]
    assert torch.isclose(sum(per_rank) / world, losses.mean())


def test_bad_environment_is_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match=r"WORLD_SIZE='two' must be an integer"):
        setup(device="cpu")


def test_cuda_without_a_device_is_refused(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: nothing to refuse")
    with pytest.raises(ConfigError, match=r"no CUDA device is available"):
        setup(device="cuda")
