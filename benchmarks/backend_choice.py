"""Compiled loops against the torch backend per step, around the boundary backend="auto" draws.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.backend_choice [--repeats 5]
[--steps 20] [--threads N] [--no-record]``.

For each shape (widths, batch rows B, members M) both backends of the batched engine train the
same synthetic rows: ``--steps`` optimizer steps (Adam, float32) per timed run, interleaved, the
fastest of ``--repeats`` runs counting (the machine is shared). Printed per shape: ms per step of
each, the ratio torch / compiled (> 1: compiled faster), what ``backend="auto"`` picks
(:func:`softclass.training.backend_choice.choose_by_speed`, decision cache cleared first) and what
that decision cost (wall ms, measurement included). Appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import time

import torch

from benchmarks import _results
from softclass.mlp.model import MLPConfig
from softclass.training import backend_choice
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.config import TrainConfig
from softclass.training.stacked import Member

# (features, hidden, classes, batch rows, members, rows of the run): Iris compare (4 designs) and
# compare --seeds 10, then single models around the fixed 1024-weight threshold, the estimator's
# network, and online SGD on a wide layer.
SHAPES = [
    (4, (7,), 3, 16, 4, 120),
    (4, (7,), 3, 16, 40, 120),
    (16, (32,), 4, 64, 2, 4096),
    (32, (32,), 10, 32, 1, 4096),
    (32, (64,), 10, 64, 1, 4096),
    (32, (128,), 10, 128, 1, 4096),
    (50, (128,), 10, 256, 1, 4096),
    (20, (64, 64), 5, 32, 8, 4096),
    (50, (128,), 10, 1, 1, 4096),
    (50, (128, 128), 10, 256, 1, 200_000),
]


def _per_step(trainer: BatchedTrainer, steps: int, repeats: int) -> tuple[float, float]:
    """Best seconds per step (compiled, torch) of ``steps`` steps on a copy of ``trainer``."""
    probe = copy.deepcopy(trainer)
    probe.settings = dataclasses.replace(trainer.settings, backend="torch")
    config = trainer.config
    n_rows = trainer.settings.batch_size * steps
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(n_rows, config.n_features, generator=generator)
    one_hot = torch.nn.functional.one_hot(torch.arange(n_rows) % config.n_classes).float()
    rows = probe.training_rows(features, one_hot)
    runs = {
        "compiled": lambda: probe.run_compiled_epochs(rows, 0, 1),
        "torch": lambda: probe.train_epoch(rows, 0),
    }
    best = dict.fromkeys(runs, float("inf"))
    for run in runs.values():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best["compiled"] / steps, best["torch"] / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    section = "## Backend choice: compiled vs torch per step (benchmarks/backend_choice.py)"
    header = (
        "| date | commit | machine | shape (widths, B, M) | MACs/step | compiled ms/step "
        "| torch ms/step | torch/compiled | auto picks | decision ms | why |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    print(header)
    for features, hidden, classes, batch, members, n_rows in SHAPES:
        config = MLPConfig(features, classes, hidden=hidden, activation="relu")
        settings = TrainConfig(batch_size=batch, optimizer="adam", learning_rate=1e-3, epochs=100)
        member_list = [Member("ABCD"[m % 4], m // 4) for m in range(members)]
        trainer = BatchedTrainer(config, member_list, settings)
        compiled, torch_path = _per_step(trainer, arguments.steps, arguments.repeats)
        backend_choice.clear_decisions()
        fresh = BatchedTrainer(config, member_list, settings)
        start = time.perf_counter()
        choice = fresh.choose_backend(n_rows)
        decision_ms = 1e3 * (time.perf_counter() - start)
        shape = backend_choice.step_shape(trainer, n_rows)
        row = (
            f"| {datetime.date.today()} | {_results.commit()} | {_results.machine()} "
            f"| {'-'.join(map(str, shape.widths))}, {batch}, {members} | {shape.work:,} "
            f"| {compiled * 1e3:.3f} | {torch_path * 1e3:.3f} | {torch_path / compiled:.2f}x "
            f"| {choice.backend} | {decision_ms:.1f} | {choice.reason} |"
        )
        print(row, flush=True)
        if not arguments.no_record:
            _results.append_row(section, header, row)


if __name__ == "__main__":
    main()
