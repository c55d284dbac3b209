"""How many CPU threads torch trains with: chosen by the size of one step, or the user's.

torch's default (one thread per core) loses badly on small matrices: every op of a step opens a
parallel region whose fork/join costs more than the arithmetic it splits, and when another process
holds a core one thread waits at each barrier for its time slice. Measurements on the shared
2-core machine (AMD EPYC, torch 2.13; ``python -m benchmarks.threads`` and
``benchmarks.estimator_throughput``, 1 and 2 threads side by side, medians) are quoted at
``STEP_FLOPS_FOR_TWO_THREADS``; the rule: one thread below it, and above it a second thread only
when the load average leaves a core idle.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from collections.abc import Iterator, Sequence

import torch

# Matmul work of one step (forward + backward: 6 · rows · Σ in·out FLOP) from which a second
# thread is worth trying. Measured on the 2-core machine, 2 threads against 1, side by side:
# - machine idle (load 1.4), 50-128-128-10 Adam, batch 256 (37 MFLOP/step): Classifier.fit 1.20x
#   faster (511k vs 426k samples/s), the step's matmuls alone 1.75x (1.08M vs 620k rows/s); the
#   elementwise ops and the optimizer (a third of a step) gain nothing at this size.
# - machine busy (load 13, other jobs on both cores): 2 threads 2.5-570x SLOWER at every size
#   of the grid, 0.7 to 6,800 MFLOP/step (0.10x at 37, 0.24x at 148, 0.39x at 6,800; RESULTS.md,
#   benchmarks/threads.py; an earlier run at load 8 gave 0.09-0.22x).
# So the size where 2 threads start to win is below 37 MFLOP on an idle machine, but the gain
# there (1.2x) is small against the loss when a neighbour starts a job mid-fit (the issue saw
# 3.5-4 s per epoch against 0.7 s). The threshold is set 4x higher (batch 1024 of the network
# above: every op 4x larger, its fork/join 4x cheaper in proportion), and the load check (a
# second thread only when a core is idle) guards against the busy case.
STEP_FLOPS_FOR_TWO_THREADS = 150e6


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

    1 below ``STEP_FLOPS_FOR_TWO_THREADS`` of matmul work per step; above it, one thread per half
    of that work (2 at the threshold, 4 at twice it, ...), at most the cores this process may use
    that the load average leaves idle (at least 1).
    """
    by_size = int(2 * step_flops(rows_per_step, widths) // STEP_FLOPS_FOR_TWO_THREADS)
    if by_size < 2:
        return 1
    return min(by_size, idle_cores(available_cores()))


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
