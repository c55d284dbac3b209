"""Time of ``softclass compare`` on the bundled Iris against ``python -c "import torch"``, same run.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.compare_time``. Measures,
best of ``--repeats`` (the machine may be shared; the best run is the least disturbed one):

1. ``python -c "import torch"`` in a fresh process (the reference);
2. ``python -m softclass compare --out <tmp>`` (4 designs, 100 epochs, plots written) in a fresh
   process, and its ratio to (1) (goal ≤ 2x);
3. the training alone in this process: ``softclass.compare`` of the 4 designs, 100 epochs,
   writing nothing (the batched training, the per-epoch agreement, the measurements; goal
   ≤ 0.5 s);
4. ``python -m softclass compare --seeds 10 --epochs 1000`` end to end (goal ≤ 5 s).

Appends one row to ``benchmarks/results/compare_time.csv``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._results import commit, machine
from softclass.io import atomic_write_text

RESULTS_PATH = Path(__file__).parent / "results" / "compare_time.csv"


def _process_seconds(arguments: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, *arguments], check=True, capture_output=True, env=dict(os.environ)
    )
    return time.perf_counter() - started


def _training_seconds(seeds: int, epochs: int) -> float:
    """In this process: ``softclass.compare`` without writing anything, i.e. the batched
    training of every design x seed with the per-epoch agreement and the final measurements."""
    import torch

    from softclass.data import load_bundled
    from softclass.data.prepare import prepare_table
    from softclass.jobs.compare import compare
    from softclass.training.config import TrainConfig

    torch.set_num_threads(1)  # what the command line chooses for Iris
    data = prepare_table(load_bundled("iris"))
    started = time.perf_counter()
    compare(data, "ABCD", TrainConfig(epochs=epochs), seeds=seeds)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    best = {"import_torch": [], "compare": [], "training": [], "seeds10": []}
    with tempfile.TemporaryDirectory() as directory:
        for repeat in range(arguments.repeats):
            best["import_torch"].append(_process_seconds(["-c", "import torch"]))
            best["compare"].append(
                _process_seconds(["-m", "softclass", "compare", "--out", f"{directory}/c{repeat}"])
            )
            best["training"].append(_training_seconds(1, 100))
            best["seeds10"].append(
                _process_seconds(
                    [
                        "-m",
                        "softclass",
                        "compare",
                        "--seeds",
                        "10",
                        "--epochs",
                        "1000",
                        "--out",
                        f"{directory}/s{repeat}",
                    ]
                )
            )
    figures = {name: min(values) for name, values in best.items()}
    ratio = figures["compare"] / figures["import_torch"]
    print(f"python -c 'import torch'            {figures['import_torch']:6.2f} s (reference)")
    print(f"softclass compare (Iris, 4x100)     {figures['compare']:6.2f} s = {ratio:.2f}x (≤ 2x)")
    print(f"  training alone (compare, no files) {figures['training']:6.3f} s (goal ≤ 0.5 s)")
    print(f"compare --seeds 10 --epochs 1000    {figures['seeds10']:6.2f} s (goal ≤ 5 s)")
    print(f"machine: {machine()}; best of {arguments.repeats}")
    row = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        **{f"{name}_s": round(value, 3) for name, value in figures.items()},
        "compare_over_import_torch": round(ratio, 2),
    }
    existing = RESULTS_PATH.read_text() if RESULTS_PATH.exists() else ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(row))
    if not existing:
        writer.writeheader()
    writer.writerow(row)
    atomic_write_text(RESULTS_PATH, existing + buffer.getvalue())


if __name__ == "__main__":
    main()
