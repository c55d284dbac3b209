"""Training throughput of softclass.Classifier against scikit-learn's MLPClassifier, same run.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.estimator_throughput``.

Synthetic table: 200,000 rows × 50 features, 10 classes (``make_classification``, seed 0).
Network 50-128-128-10 relu, Adam (lr 1e-3), batch 256, a fixed number of epochs with no early
stopping and no L2 term (``alpha=0``), every library on ``--threads`` threads (default 1: on
this shared 2-core machine two OpenMP threads collapse to a few thousand samples/s whenever
another job holds a core). Samples/s = rows × epochs / fit seconds. MLPClassifier is timed on
float64 input (what most numpy users pass; it computes in float64) and on float32 input (it then
computes in float32); softclass always trains in float32. The machine is shared: the cases are
timed in turn, ``--repeats`` times, and the fastest fit of each counts. Appends a row to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from benchmarks._results import append_row, commit, machine
from softclass.estimator import Classifier

SECTION = "## Estimator throughput: 200,000x50, 10 classes, 50-128-128-10 Adam, batch 256"
HEADER = (
    "| date | commit | machine | rows x epochs | MLPClassifier f64 samples/s | "
    "MLPClassifier f32 samples/s | softclass samples/s | vs f64 | vs f32 |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def timed_fit(estimator, features, labels) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        estimator.fit(features, labels)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed fits per case")
    parser.add_argument("--threads", type=int, default=1, help="threads for every library")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    arguments = parser.parse_args()
    features, labels = make_classification(
        n_samples=arguments.rows,
        n_features=50,
        n_informative=30,
        n_classes=10,
        random_state=0,
    )
    common = dict(hidden_layer_sizes=(128, 128), batch_size=256, max_iter=arguments.epochs)
    reference = dict(
        **common, solver="adam", learning_rate_init=1e-3, alpha=0.0, tol=0.0, random_state=0
    )
    n_samples = arguments.rows * arguments.epochs
    features32 = features.astype(np.float32)
    cases = {
        "sklearn64": lambda: timed_fit(MLPClassifier(**reference), features, labels),
        "sklearn32": lambda: timed_fit(MLPClassifier(**reference), features32, labels),
        "softclass": lambda: timed_fit(
            Classifier(**common, solver="adam", learning_rate_init=1e-3, random_state=0),
            features,
            labels,
        ),
    }
    best = dict.fromkeys(cases, float("inf"))
    torch.set_num_threads(arguments.threads)
    with threadpool_limits(arguments.threads):  # numpy's BLAS under scikit-learn, torch's OpenMP
        for _ in range(arguments.repeats):  # interleaved: a busy spell hits every case alike
            for name, run in cases.items():
                best[name] = min(best[name], run())
    sklearn64, sklearn32, ours = (n_samples / best[name] for name in cases)
    print(f"machine: {machine()}")
    print(f"MLPClassifier float64: {sklearn64:,.0f} samples/s")
    print(f"MLPClassifier float32: {sklearn32:,.0f} samples/s")
    print(
        f"softclass.Classifier:  {ours:,.0f} samples/s -> {ours / sklearn64:.1f}x (float64 "
        f"reference), {ours / sklearn32:.1f}x (float32 reference)"
    )
    if not arguments.no_record:
        append_row(
            SECTION,
            HEADER,
            f"| {datetime.date.today()} | {commit()} | {machine()} | {arguments.rows} x "
            f"{arguments.epochs} epochs | {sklearn64:,.0f} | {sklearn32:,.0f} | {ours:,.0f} | "
            f"{ours / sklearn64:.1f}x | {ours / sklearn32:.1f}x |",
        )


if __name__ == "__main__":
    main()
