"""Many Iris models at once, against scikit-learn's MLPClassifier measured in the same run.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.ensemble [--epochs 1000]``.

* Ensemble: the four designs × 10 seeds of the seed's 4-7-3 tanh network, plain SGD (lr 0.01,
  batch 10) on the bundled Iris z-scored by softclass.data's Recipe (150 rows → 15 steps per
  epoch), validation loss and accuracy recorded every epoch — one batched computation.
* Reference: ``MLPClassifier(hidden_layer_sizes=(7,), activation="tanh", solver="sgd",
  batch_size=10, momentum=0, alpha=0, tol=0, n_iter_no_change > max_iter)``, so it runs every
  epoch. A few fits are timed and the time per model-epoch is scaled to 40 models × epochs.
* Single model: per-epoch time of one model through the batched engine (M = 1) against the
  per-epoch time of one MLPClassifier fit.

Both softclass cases take the compiled training loops (softclass.training.mlp_native) when they are
available; ``SOFTCLASS_NATIVE=0`` measures the torch path. The path taken is printed.

Every library runs on one thread: at these sizes threads only add synchronisation. The machine
is shared, so every case is timed several times and the fastest run counts (the least disturbed
one), for softclass and scikit-learn alike. Appends a row to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from benchmarks._results import append_row, commit, machine
from softclass.data import Recipe, load_bundled
from softclass.mlp.model import MLPConfig
from softclass.training import mlp_native
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.config import TrainConfig
from softclass.training.ensemble import Member, design_seed_grid, train_ensemble

SECTION = "## Ensemble: 4 designs x 10 seeds, Iris 4-7-3 tanh SGD (benchmarks/ensemble.py)"
HEADER = (
    "| date | commit | machine | epochs | ensemble s (40 models) | sklearn s (40 models, scaled) "
    "| speed-up | single model ms/epoch | sklearn ms/epoch | single speed-up |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def load_iris_standardized() -> tuple[np.ndarray, np.ndarray]:
    """The bundled Iris via softclass.data: z-scored features ``(150, 4)``, targets ``(150,)``."""
    table = load_bundled("iris")
    prepared = Recipe.fit(table, target="species").prepare(table)
    return prepared.features.double().numpy(), prepared.targets.numpy()


def time_sklearn(features, targets, epochs: int, seeds: list[int]) -> float:
    """Seconds per model-epoch of MLPClassifier: the fastest of ``seeds`` fits of ``epochs``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    best = float("inf")
    for seed in seeds:
        classifier = MLPClassifier(
            hidden_layer_sizes=(7,),
            activation="tanh",
            solver="sgd",
            batch_size=10,
            learning_rate_init=0.01,
            momentum=0.0,
            alpha=0.0,
            max_iter=epochs,
            tol=0.0,
            n_iter_no_change=epochs + 1,
            random_state=seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = time.perf_counter()
            classifier.fit(features, targets)
            best = min(best, time.perf_counter() - start)
        if classifier.n_iter_ != epochs:
            raise RuntimeError(f"MLPClassifier stopped after {classifier.n_iter_} epochs")
    return best / epochs


def time_ensemble(features, targets, members, epochs: int) -> tuple[float, np.ndarray]:
    """Seconds for training ``members`` for ``epochs`` epochs; final validation accuracies."""
    settings = TrainConfig(epochs=epochs, batch_size=10, learning_rate=0.01, momentum=0.0)
    features_t = torch.as_tensor(features, dtype=torch.float32)
    targets_t = torch.as_tensor(targets)
    start = time.perf_counter()
    result = train_ensemble(
        MLPConfig(4, 3), members, features_t, targets_t, settings, features_t, targets_t
    )
    return time.perf_counter() - start, result.val_accuracy[:, -1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--sklearn-epochs", type=int, default=200, help="epochs per timed fit")
    parser.add_argument("--sklearn-fits", type=int, default=3, help="timed MLPClassifier fits")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each softclass case")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1)  # numpy's BLAS under scikit-learn too (it does not thread such sizes)
    features, targets = load_iris_standardized()
    members = design_seed_grid("ABCD", range(10))

    per_model_epoch = time_sklearn(
        features, targets, arguments.sklearn_epochs, list(range(arguments.sklearn_fits))
    )
    runs = [
        time_ensemble(features, targets, members, arguments.epochs)
        for _ in range(arguments.repeats)
    ]
    ensemble_seconds, accuracies = min(runs, key=lambda run: run[0])
    sklearn_seconds = per_model_epoch * len(members) * arguments.epochs
    single_epochs = max(arguments.epochs // 5, 20)
    single_seconds = min(
        time_ensemble(features, targets, [Member("A", 0)], single_epochs)[0]
        for _ in range(arguments.repeats)
    )
    single_ms = 1e3 * single_seconds / single_epochs

    compiled = BatchedTrainer(MLPConfig(4, 3), members, TrainConfig()).uses_compiled
    print(f"machine: {machine()}")
    print(
        "path: " + ("compiled loops" if compiled else f"torch ({mlp_native.unavailable_reason()})")
    )
    print(
        f"ensemble, {len(members)} models x {arguments.epochs} epochs: {ensemble_seconds:.2f} s "
        f"(final accuracy {accuracies.min():.3f}-{accuracies.max():.3f})"
    )
    print(
        f"MLPClassifier: {1e3 * per_model_epoch:.3f} ms per model-epoch (best of "
        f"{arguments.sklearn_fits} fits x {arguments.sklearn_epochs} epochs), scaled to "
        f"{len(members)} x {arguments.epochs}: {sklearn_seconds:.1f} s -> ensemble speed-up "
        f"{sklearn_seconds / ensemble_seconds:.1f}x"
    )
    print(
        f"single model (M=1): {single_ms:.3f} ms/epoch vs MLPClassifier "
        f"{1e3 * per_model_epoch:.3f} ms/epoch -> {1e3 * per_model_epoch / single_ms:.1f}x"
    )
    if not arguments.no_record:
        append_row(
            SECTION,
            HEADER,
            f"| {datetime.date.today()} | {commit()} | {machine()} | {arguments.epochs} | "
            f"{ensemble_seconds:.2f} | {sklearn_seconds:.1f} | "
            f"{sklearn_seconds / ensemble_seconds:.1f}x | {single_ms:.3f} | "
            f"{1e3 * per_model_epoch:.3f} | {1e3 * per_model_epoch / single_ms:.1f}x |",
        )


if __name__ == "__main__":
    main()
