"""Training throughput of softclass's loop against scikit-learn's MLPClassifier, same run.

Run from the repository root: ``python -m benchmarks.train_throughput`` (softclass importable,
e.g. ``PYTHONPATH=src``). Two measurements:

1. Throughput: a synthetic 200,000 × 50 table with 10 classes (labels from a random linear
   teacher), an MLP 50-128-128-10 with ReLU, Adam (lr 1e-3), batch 256, one epoch after a short
   warm-up, measured ``--repeats`` times alternating the two (best of each is kept: the machine
   may be shared, and the best run is the least disturbed one), softclass (design A through
   :func:`softclass.training.engine.train_model`, the path of ``softclass train``: the backend
   "auto" picks — the batched torch engine at this size) and
   ``sklearn.neural_network.MLPClassifier`` with the same shape and options; prints samples/s of
   each and the ratio. Both use the process's default thread count; ``--threads N`` limits both
   (torch.set_num_threads and, for numpy's BLAS, threadpoolctl).
2. The main job's time: ``softclass.jobs.compare`` on the bundled Iris, designs A–D, 1000 epochs.

Appends one row per run to ``benchmarks/results/train_throughput.csv``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks._results import commit
from softclass.io import atomic_write_text
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLPConfig
from softclass.training.config import TrainConfig
from softclass.training.engine import train_model

RESULTS_PATH = Path(__file__).parent / "results" / "train_throughput.csv"
N_ROWS, N_FEATURES, N_CLASSES, HIDDEN = 200_000, 50, 10, (128, 128)
BATCH_SIZE, LEARNING_RATE = 256, 1e-3
WARMUP_ROWS = 20_000  # one short epoch on a slice first: imports, allocator, thread pools


def synthetic_table(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (N_ROWS, N_FEATURES) features and int64 (N_ROWS,) labels of a linear teacher."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(N_ROWS, N_FEATURES, generator=generator)
    teacher = torch.randn(N_FEATURES, N_CLASSES, generator=generator)
    return features, (features @ teacher).argmax(dim=1)


def softclass_samples_per_second(features: torch.Tensor, targets: torch.Tensor) -> float:
    config = TrainConfig(
        epochs=1,
        batch_size=BATCH_SIZE,
        optimizer="adam",
        learning_rate=LEARNING_RATE,
        validation_fraction=0.0,
        device="cpu",
    )
    model_config = MLPConfig(N_FEATURES, N_CLASSES, HIDDEN, "relu")
    train_model(
        get_design("A"), model_config, config, features[:WARMUP_ROWS], targets[:WARMUP_ROWS]
    )
    started = time.perf_counter()
    train_model(get_design("A"), model_config, config, features, targets)
    return features.shape[0] / (time.perf_counter() - started)


def sklearn_samples_per_second(features: np.ndarray, targets: np.ndarray) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    def one_epoch(rows: int) -> float:
        classifier = MLPClassifier(
            hidden_layer_sizes=HIDDEN,
            activation="relu",
            solver="adam",
            alpha=0.0,
            batch_size=BATCH_SIZE,
            learning_rate_init=LEARNING_RATE,
            max_iter=1,
            shuffle=True,
            random_state=0,
            tol=0.0,
            n_iter_no_change=10**9,
        )
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            classifier.fit(features[:rows], targets[:rows])
        return rows / (time.perf_counter() - started)

    one_epoch(WARMUP_ROWS)
    return one_epoch(features.shape[0])


def iris_compare_seconds(epochs: int) -> tuple[float, dict[str, float]]:
    from softclass.data import load_bundled
    from softclass.data.prepare import prepare_table
    from softclass.jobs.compare import compare

    config = TrainConfig(epochs=epochs)
    started = time.perf_counter()
    data = prepare_table(load_bundled("iris"), seed=config.seed)
    result = compare(data, "ABCD", config)
    seconds = time.perf_counter() - started
    return seconds, {name: result.summary(name)["validation_accuracy"] for name in "ABCD"}


def _load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--iris-epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each")
    arguments = parser.parse_args()
    if arguments.threads is not None:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(arguments.threads)
        threadpool_limits(arguments.threads)
    features, targets = synthetic_table()
    load_before = _load_average()
    ours = theirs = 0.0
    for _ in range(arguments.repeats):
        ours = max(ours, softclass_samples_per_second(features, targets))
        theirs = max(theirs, sklearn_samples_per_second(features.numpy(), targets.numpy()))
    iris_seconds, iris_accuracy = iris_compare_seconds(arguments.iris_epochs)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"throughput, {N_ROWS}x{N_FEATURES}, MLP 50-128-128-10 relu, Adam, batch {BATCH_SIZE}")
    print(f"  softclass  {ours:12,.0f} samples/s (best of {arguments.repeats})")
    print(f"  sklearn    {theirs:12,.0f} samples/s (best of {arguments.repeats})")
    print(f"  ratio      {ours / theirs:12.2f}x  (goal ≥ 3x)")
    print(
        f"Iris compare, designs A-D, {arguments.iris_epochs} epochs: {iris_seconds:.1f} s; "
        "validation accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in iris_accuracy.items())
    )
    print(f"machine: {machine}; load average before: {load_before}, after: {_load_average()}")
    row = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine,
        "torch": torch.__version__,
        "load_average": load_before,
        "softclass_samples_per_s": round(ours),
        "sklearn_samples_per_s": round(theirs),
        "ratio": round(ours / theirs, 3),
        "repeats": arguments.repeats,
        "iris_compare_epochs": arguments.iris_epochs,
        "iris_compare_seconds": round(iris_seconds, 2),
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
