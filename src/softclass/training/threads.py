"""How many CPU threads torch trains with: chosen by the size of one step, or the user's.

torch's default (one thread per core) loses badly on small matrices: every op of a step opens a
parallel region whose fork/join costs more than the arithmetic it splits, and when another process
holds a core one thread waits at each barrier for its time slice. Measured on the 2-core machine
(AMD EPYC, torch 2.13, ``python -m benchmarks.threads``, 1 and 2 threads side by side, medians):
see ``STEP_FLOPS_FOR_TWO_THREADS`` below. Above the crossover a second thread is used only when
the load average leaves a core idle.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from collections.abc import Iterator, Sequence

import torch

# Matmul work of one step (forward + backward: 6 · rows · Σ in·out FLOP) from which 2 threads
# beat 1 on the shared 2-core machine. PLACEHOLDER until measured.
STEP_FLOPS_FOR_TWO_THREADS = 1e9


def step_flops(rows_per_step: int, widths: Sequence[int]) -> float:
    """Matmul FLOP of one training step of an MLP with layer ``widths`` (features .. classes):
    2 · rows · in · out per layer forward, twice that backward (weight and input gradients)."""
    return 6.0 * rows_per_step * sum(a * b for a, b in itertools.pairwise(widths))


def available_cores() -> int:
    """CPU cores this process may use, shared among the ranks of a torchrun job on this host."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (cores or 1) // max(1, local_ranks))


def idle_cores(cores: int) -> int:
    """Cores not busy with other work by the 1-minute load average (this process counts once)."""
    if not hasattr(os, "getloadavg"):
        return cores
    others = max(0.0, os.getloadavg()[0] - 1.0)
    return max(1, cores - math.ceil(others - 0.25))


def choose_threads(rows_per_step: int, widths: Sequence[int]) -> int:
    """Threads for training an MLP of layer ``widths`` on batches of ``rows_per_step`` rows.

    1 below ``STEP_FLOPS_FOR_TWO_THREADS`` of matmul work per step; above it, every core this
    process may use that the load average leaves idle (at least 1).
    """
    if step_flops(rows_per_step, widths) < STEP_FLOPS_FOR_TWO_THREADS:
        return 1
    return idle_cores(available_cores())


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run the block with ``threads`` torch intra-op threads, then restore the caller's setting."""
    previous = torch.get_num_threads()
    if threads != previous:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
