"""Data-parallel training on torch.distributed, as launched by ``torchrun``.

softclass runs no cluster code of its own: ``torchrun`` starts the processes and sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them and
joins the process group (gloo on CPU, nccl on CUDA). Without those variables (or with a world of
one) everything here is a no-op and training runs in a single process.

Sharding: every rank builds the same tensors (the table is read and the recipe fitted identically
on each), walks the same global batch order (:mod:`softclass.training.batching`), and takes its own
interleaved share of each global batch (:func:`shard_rows`). Each rank's loss is its *sum* over its
rows divided by the global batch size, times the world size; DDP averages gradients over ranks, so
the step equals a one-process step on the whole global batch, however the rows fall.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from softclass.errors import ConfigError

# How long a collective may wait for a rank before the run fails (a dead rank must not hang the
# others forever). Training steps on tabular data take milliseconds, so minutes is generous.
DEFAULT_TIMEOUT_SECONDS = 120.0
_CPU = torch.device("cpu")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the run: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "gloo" or "nccl" when a process group is joined, else None
    device: torch.device = _CPU

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files and prints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} must be an integer") from None


def setup(device: str = "auto", timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> DistContext:
    """Join the process group that ``torchrun`` prepared, or return the single-process context.

    Args:
        device: "auto" (CUDA when available, else CPU), "cpu" or "cuda".
        timeout_seconds: how long collectives wait for a missing rank before failing.

    Returns:
        The :class:`DistContext` of this process. With CUDA, each rank uses device LOCAL_RANK and
        the nccl backend; on CPU, gloo.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("device='cuda' was asked for but no CUDA device is available; use cpu")
    torch_device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if world_size <= 1:
        return DistContext(device=torch.device("cuda") if use_cuda else torch.device("cpu"))
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run with one process")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(torch_device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_seconds),
        )
    return DistContext(rank, world_size, local_rank, backend, torch_device)


def teardown(context: DistContext) -> None:
    """Leave the process group (safe to call in ``finally``)."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def shard_rows(batch_rows: torch.Tensor, context: DistContext) -> torch.Tensor:
    """This rank's interleaved share of a global batch's row indices (all of them alone)."""
    if not context.enabled:
        return batch_rows
    return batch_rows[context.rank :: context.world_size]


def loss_scale(global_batch_rows: int, context: DistContext) -> float:
    """Factor turning a rank's summed loss into its share of the global mean under DDP.

    DDP averages gradients over ranks, so each rank multiplies its summed loss by
    ``world_size / global_batch_rows``: the average of the ranks' gradients is then the gradient
    of the mean over the whole global batch.
    """
    return context.world_size / global_batch_rows


def all_reduce_sum(
    tensor: torch.Tensor, context: DistContext, group: object | None = None
) -> torch.Tensor:
    """Sum ``tensor`` over ranks (in place) and return it; identity with one process."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


def broadcast_tensor(tensor: torch.Tensor, context: DistContext, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``tensor`` copied into ``tensor`` on every rank (in place); identity
    with one process."""
    if context.enabled:
        dist.broadcast(tensor, src=src)
    return tensor


def gather_object(value: object, context: DistContext, group: object | None = None) -> list:
    """Every rank's ``value`` (pickled), in rank order, on rank 0; ``[]`` on the others and
    ``[value]`` with one process."""
    if not context.enabled:
        return [value]
    gathered = [None] * context.world_size if context.is_main else None
    dist.gather_object(value, gathered, dst=0, group=group)
    return gathered if context.is_main else []


def patient_group(context: DistContext, seconds: float) -> object | None:
    """A gloo group of every rank whose collectives wait ``seconds`` (None with one process).

    For the steps where ranks legitimately wait long for one another, such as rank 0 fitting
    a streamed table's recipe while the others wait for it; training keeps the short timeout.
    Every rank must call it (creating a group is a collective).
    """
    if not context.enabled:
        return None
    return dist.new_group(backend="gloo", timeout=timedelta(seconds=seconds))


def barrier(context: DistContext) -> None:
    """Wait for every rank (e.g. before reading a file rank 0 wrote)."""
    if context.enabled:
        dist.barrier()


def broadcast_object(value: object, context: DistContext, group: object | None = None) -> object:
    """Rank 0's ``value`` on every rank (pickled; for small things such as a recipe's dict)."""
    if not context.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0, group=group)
    return holder[0]


def threads_per_rank(threads: int) -> int:
    """``threads`` shared among the ranks of this machine (``LOCAL_WORLD_SIZE``), at least 1.

    Two ranks on two cores each take one thread: more threads than cores per rank makes the
    ranks' threads fight for the cores and the run slower than one process.
    """
    return max(1, min(threads, (os.cpu_count() or 1) // max(_env_int("LOCAL_WORLD_SIZE", 1), 1)))
