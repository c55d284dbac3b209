"""Training throughput of softclass.Classifier against the matmul ceiling and MLPClassifier.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.estimator_throughput``.

Synthetic table: 200,000 rows × 50 features, 10 classes (``make_classification``, seed 0).
Network 50-128-128-10 relu, Adam (lr 1e-3), batch 256, ``--epochs`` epochs with no early stopping
and no L2 term (``alpha=0``). Threads: what ``Classifier`` chooses by default (``n_jobs=None``,
:func:`softclass.training.threads.choose_threads`) unless ``--threads`` sets them; every case runs
on that count (torch's threads, and numpy's BLAS under scikit-learn through threadpoolctl).

Four cases, timed in turn ``--repeats`` times (a busy spell of the shared machine hits every case
alike), medians reported:

* the **matmul ceiling**: one step's products alone, with torch, on float32 tensors of the step's
  shapes — the three forward products and six backward ones (weight and input gradients of every
  layer) — repeated for as many steps as the fit takes; samples/s = rows / that time. The
  engine needs eight of the nine (not the first layer's input gradient), so this ceiling is the
  conservative one; the eight-product figure is printed too.
* softclass.Classifier on float64 input (it trains in float32);
* MLPClassifier on float64 input (it computes in float64) and on float32 input (float32).

Samples/s = rows × epochs / fit seconds, from wall time and from the process's CPU time (one
thread: CPU time is the work itself, without the time slices other jobs take on the shared
machine). Prints softclass against the ceiling (goal ≥ 0.8) and against float32 MLPClassifier
(goal ≥ 3), and the ceiling against float32 MLPClassifier (the most any engine could reach with
these products); appends a row to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import statistics
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
from softclass.training.batching import batch_bounds
from softclass.training.threads import choose_threads, torch_threads

N_FEATURES, HIDDEN, N_CLASSES, BATCH = 50, (128, 128), 10, 256
WIDTHS = (N_FEATURES, *HIDDEN, N_CLASSES)

SECTION = (
    "## Estimator throughput against the matmul ceiling: 200,000x50, 50-128-128-10 Adam, "
    "batch 256 (benchmarks/estimator_throughput.py)"
)
HEADER = (
    "| date (UTC) | commit | machine | threads | rows x epochs | clock: ceiling samples/s "
    "(9 products; 8) "
    "| softclass samples/s | MLPClassifier f64 / f32 samples/s | vs ceiling (9; 8) | vs f32 | "
    "vs f64 |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def timed(run) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def fit(estimator, features, labels) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(features, labels)


def matmul_products(n_rows: int, epochs: int, with_first_input_gradient: bool) -> None:
    """The products of ``epochs`` epochs of ``n_rows`` rows in batches of BATCH.

    Per step: forward ``a_k @ W_kᵀ`` (batch, in) × (in, out); backward the weight gradient
    ``g_kᵀ @ a_k`` (out, batch) × (batch, in) and the input gradient ``g_k @ W_k`` (batch, out) ×
    (out, in) of every layer (the first layer's only ``with_first_input_gradient``).
    """
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(b, a, generator=generator) for a, b in itertools.pairwise(WIDTHS)]
    sizes = sorted({stop - start for start, stop in batch_bounds(n_rows, BATCH)})
    inputs = {
        rows: [torch.randn(rows, width, generator=generator) for width in WIDTHS] for rows in sizes
    }
    steps = [stop - start for start, stop in batch_bounds(n_rows, BATCH)] * epochs
    for rows in steps:
        activations = inputs[rows]
        for layer, weight in enumerate(weights):
            torch.mm(activations[layer], weight.t())
        for layer, weight in enumerate(weights):
            gradient = activations[layer + 1]
            torch.mm(gradient.t(), activations[layer])
            if layer > 0 or with_first_input_gradient:
                torch.mm(gradient, weight)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed runs per case")
    parser.add_argument("--threads", type=int, default=0, help="0: what Classifier chooses")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    arguments = parser.parse_args()
    features, labels = make_classification(
        n_samples=arguments.rows,
        n_features=N_FEATURES,
        n_informative=30,
        n_classes=N_CLASSES,
        random_state=0,
    )
    threads = arguments.threads or choose_threads(BATCH, WIDTHS)
    common = dict(hidden_layer_sizes=HIDDEN, batch_size=BATCH, max_iter=arguments.epochs)
    reference = dict(
        **common, solver="adam", learning_rate_init=1e-3, alpha=0.0, tol=0.0, random_state=0
    )
    features32 = features.astype(np.float32)
    cases = {
        "ceiling9": lambda: matmul_products(arguments.rows, arguments.epochs, True),
        "ceiling8": lambda: matmul_products(arguments.rows, arguments.epochs, False),
        "softclass": lambda: fit(
            Classifier(
                **common, solver="adam", learning_rate_init=1e-3, random_state=0, n_jobs=threads
            ),
            features,
            labels,
        ),
        "sklearn32": lambda: fit(MLPClassifier(**reference), features32, labels),
        "sklearn64": lambda: fit(MLPClassifier(**reference), features, labels),
    }
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    with torch_threads(threads), threadpool_limits(threads):
        where = machine()  # torch's thread count as the cases run
        for _ in range(arguments.repeats):
            for name, run in cases.items():
                seconds[name].append(timed(run))
    n_samples = arguments.rows * arguments.epochs
    print(f"machine: {where}; medians of {arguments.repeats}")
    figures = {}
    for clock, index in (("wall", 0), ("CPU", 1)):
        speed = {
            name: n_samples / statistics.median(run[index] for run in runs)
            for name, runs in seconds.items()
        }
        ours = speed["softclass"]
        figures[clock] = speed, ours / speed["ceiling9"], ours / speed["ceiling8"]
        print(
            f"[{clock}] samples/s: ceiling {speed['ceiling9']:,.0f} (9 products), "
            f"{speed['ceiling8']:,.0f} (8); softclass {ours:,.0f}; MLPClassifier "
            f"{speed['sklearn32']:,.0f} float32, {speed['sklearn64']:,.0f} float64"
        )
        print(
            f"[{clock}] softclass / ceiling: {ours / speed['ceiling9']:.2f} (9 products; goal "
            f">= 0.80), {ours / speed['ceiling8']:.2f} (8); softclass / MLPClassifier: "
            f"{ours / speed['sklearn32']:.2f}x float32 (goal >= 3), "
            f"{ours / speed['sklearn64']:.2f}x float64; ceiling / MLPClassifier float32: "
            f"{speed['ceiling9'] / speed['sklearn32']:.2f}x"
        )
    if not arguments.no_record:
        cells = []
        for clock in ("wall", "CPU"):
            speed, ceiling9, ceiling8 = figures[clock]
            cells.append(
                f"{clock}: {speed['ceiling9']:,.0f}; {speed['ceiling8']:,.0f} | "
                f"{speed['softclass']:,.0f} | {speed['sklearn64']:,.0f} / "
                f"{speed['sklearn32']:,.0f} | {ceiling9:.2f}; {ceiling8:.2f} | "
                f"{speed['softclass'] / speed['sklearn32']:.2f}x | "
                f"{speed['softclass'] / speed['sklearn64']:.2f}x |"
            )
        for cell in cells:
            append_row(
                SECTION,
                HEADER,
                f"| {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} | {commit()} | {where} "
                f"| {threads} | {arguments.rows} x {arguments.epochs} | {cell}",
            )


if __name__ == "__main__":
    main()
