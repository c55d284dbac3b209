"""One torch thread or two? Training speed by problem size, both measured side by side.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.threads [--repeats 5]``.

For each (batch rows, hidden widths) of a grid, one member of the batched engine
(:class:`softclass.training.ensemble.BatchedTrainer`, Adam, relu, 50 features, 10 classes) trains
epochs of synthetic rows with 1 and with 2 torch threads, in turn, ``--repeats`` times; the median
samples/s of each count. The table shows the step's matmul work (MFLOP: 6 · batch · Σ in·out) and
the 2-thread / 1-thread ratio: the crossover is where it passes 1. The last columns show what
:func:`softclass.training.threads.choose_threads` picks for that size on this machine now, and
its speed against 1 thread (the default must never lose to 1 thread). Appends to RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import torch

from benchmarks._results import append_row, commit, machine
from softclass.mlp.model import MLPConfig
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.config import TrainConfig as EnsembleSettings
from softclass.training.stacked import Member
from softclass.training.threads import choose_threads, step_flops, torch_threads

GRID = [
    (32, (64,)),
    (256, (64, 64)),
    (256, (128, 128)),
    (1024, (128, 128)),
    (256, (512, 512)),
    (4096, (128, 128)),
    (1024, (512, 512)),
    (256, (1024, 1024)),
    (1024, (1024, 1024)),
]
N_FEATURES, N_CLASSES = 50, 10

SECTION = "## Threads: 1 vs 2 torch threads by problem size (benchmarks/threads.py)"
HEADER = (
    "| date | commit | machine | batch | hidden | MFLOP/step | 1 thread samples/s | "
    "2 threads samples/s | 2 vs 1 | chosen | chosen vs 1 |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def epoch_seconds(trainer: BatchedTrainer, rows, epoch: int, threads: int) -> float:
    with torch_threads(threads):
        start = time.perf_counter()
        trainer.train_epoch(rows, epoch)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved epochs per setting")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per epoch")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    arguments = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"{'batch':>6} {'hidden':>12} {'MFLOP/step':>10} {'1 thread':>12} {'2 threads':>12} "
        f"{'2 vs 1':>7} {'chosen':>6} {'chosen vs 1':>11}"
    )
    for batch, hidden in GRID:
        config = MLPConfig(N_FEATURES, N_CLASSES, hidden, "relu")
        settings = EnsembleSettings(epochs=1, batch_size=batch, optimizer="adam")
        trainer = BatchedTrainer(config, [Member("A", 0)], settings)
        n_rows = batch * arguments.steps
        generator = torch.Generator().manual_seed(0)
        features = torch.randn(n_rows, N_FEATURES, generator=generator)
        targets = torch.randint(0, N_CLASSES, (n_rows,), generator=generator)
        rows = trainer.training_rows(
            features, torch.nn.functional.one_hot(targets, N_CLASSES).float()
        )
        widths = (N_FEATURES, *hidden, N_CLASSES)
        chosen = choose_threads(batch, widths)
        cases = sorted({1, 2, chosen})
        seconds: dict[int, list[float]] = {threads: [] for threads in cases}
        epoch_seconds(trainer, rows, 0, 1)  # warm-up
        for repeat in range(arguments.repeats):
            for threads in cases:
                seconds[threads].append(epoch_seconds(trainer, rows, repeat + 1, threads))
        speed = {threads: n_rows / statistics.median(times) for threads, times in seconds.items()}
        mflop = step_flops(batch, widths) / 1e6
        line = (
            f"{batch:>6} {','.join(map(str, hidden)):>12} {mflop:>10.1f} {speed[1]:>12,.0f} "
            f"{speed[2]:>12,.0f} {speed[2] / speed[1]:>6.2f}x {chosen:>6} "
            f"{speed[chosen] / speed[1]:>10.2f}x"
        )
        print(line)
        if not arguments.no_record:
            append_row(
                SECTION,
                HEADER,
                f"| {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} | {commit()} | "
                f"{machine()} | {batch} | {','.join(map(str, hidden))} | {mflop:.1f} | "
                f"{speed[1]:,.0f} | {speed[2]:,.0f} | {speed[2] / speed[1]:.2f}x | {chosen} | "
                f"{speed[chosen] / speed[1]:.2f}x |",
            )


if __name__ == "__main__":
    main()
