"""One training step three ways: the compiled row loops, the compiled BLAS step, the torch path.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.train_step``.

For each shape of ``SHAPES`` (widths, batch size, members), a :class:`BatchedTrainer` (Adam,
design A, float32) trains one epoch of synthetic rows through

* **rows**: ``mlp_native.c``'s row loops (the BLAS step turned off by a threshold above the
  shape);
* **blas**: ``mlp_step.c``, the same step with the batch's products through the BLAS's gemm;
* **torch**: the batched torch backend (hand-written backward, oneDNN / MKL products).

Each case after a warm-up epoch, ``--repeats`` interleaved timed epochs, the best kept (the
machine is shared); CPU time of the process on one thread (wall time with ``--threads`` > 1).
Prints µs per step and the ratios torch / blas and rows / blas; where rows / blas crosses 1 is
``BLAS_MIN_WORK`` of :mod:`softclass.training.backends.compiled`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import torch

from softclass.mlp.model import MLPConfig
from softclass.training.backends import compiled
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.config import TrainConfig
from softclass.training.ensemble import Member

# (widths, batch size, members): from the Iris network of compare up to the estimator's shape.
SHAPES = [
    ((4, 7, 3), 16, 4),
    ((16, 32, 4), 64, 2),
    ((20, 32, 5), 32, 1),
    ((30, 64, 10), 64, 1),
    ((50, 64, 10), 128, 1),
    ((50, 128, 128, 10), 256, 1),
    ((50, 128, 128, 10), 256, 4),
    ((100, 512, 512, 10), 256, 1),
]


def _trainer(widths, batch: int, members: int, backend: str) -> BatchedTrainer:
    config = MLPConfig(widths[0], widths[-1], hidden=tuple(widths[1:-1]), activation="relu")
    settings = TrainConfig(
        batch_size=batch, epochs=1, optimizer="adam", learning_rate=1e-3, backend=backend
    )
    return BatchedTrainer(config, [Member("A", seed) for seed in range(members)], settings)


def _time_cases(widths, batch: int, members: int, repeats: int, clock) -> dict[str, float]:
    """Best seconds per step of each case."""
    n_rows = max(batch * 40, 2048)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(n_rows, widths[0], generator=generator)
    targets = torch.arange(n_rows) % widths[-1]
    trainers = {
        name: _trainer(widths, batch, members, "torch" if name == "torch" else "compiled")
        for name in ("rows", "blas", "torch")
    }
    tables = {
        name: trainer.training_rows(features, targets=targets) for name, trainer in trainers.items()
    }
    threshold = compiled.BLAS_MIN_WORK
    best = dict.fromkeys(trainers, float("inf"))
    steps = -(-n_rows // batch)
    for repeat in range(repeats + 1):
        for name, trainer in trainers.items():
            compiled.BLAS_MIN_WORK = 1 << 62 if name == "rows" else 0
            start = clock()
            trainer.train_epoch(tables[name], repeat)
            if repeat:
                best[name] = min(best[name], (clock() - start) / steps)
    compiled.BLAS_MIN_WORK = threshold
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    clock = time.process_time if arguments.threads == 1 else time.perf_counter
    print(
        f"threads {arguments.threads}, load {os.getloadavg()[0]:.1f}, best of "
        f"{arguments.repeats}; µs per step ({'CPU' if arguments.threads == 1 else 'wall'})"
    )
    print(
        "| widths | batch | members | multiply-adds/step/member | rows | blas | torch | "
        "rows / blas | torch / blas |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for widths, batch, members in SHAPES:
        work = batch * sum(a * b for a, b in itertools.pairwise(widths))
        seconds = _time_cases(widths, batch, members, arguments.repeats, clock)
        micro = {name: value * 1e6 for name, value in seconds.items()}
        print(
            f"| {'-'.join(map(str, widths))} | {batch} | {members} | {work:,} | "
            f"{micro['rows']:.1f} | {micro['blas']:.1f} | {micro['torch']:.1f} | "
            f"{micro['rows'] / micro['blas']:.2f} | {micro['torch'] / micro['blas']:.2f} |"
        )


if __name__ == "__main__":
    main()
