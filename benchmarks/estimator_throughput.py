"""Training throughput of softclass.Classifier against the matmul ceiling and MLPClassifier.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.estimator_throughput``.

Synthetic table: 200,000 rows × 50 features, 10 classes (``make_classification``, seed 0).
Network 50-128-128-10 relu, Adam (lr 1e-3), batch 256, ``--epochs`` epochs with no early stopping
and no L2 term (``alpha=0``). Threads: what ``Classifier`` chooses by default (``n_jobs=None``,
:func:`softclass.training.threads.choose_threads`) unless ``--threads`` sets them; every case runs
on that count (torch's threads, and numpy's BLAS under scikit-learn through threadpoolctl).

Cases, timed in turn ``--repeats`` times (a busy spell of the shared machine hits every case
alike), medians reported:

* the **matmul ceiling**: one step's products alone, with torch, on float32 tensors of the step's
  shapes — the three forward products and six backward ones (weight and input gradients of every
  layer) — repeated for as many steps as the fit takes; samples/s = rows / that time. Two
  versions:

  - **best** (the goal's ceiling): each product computed the fastest way this machine offers,
    chosen in the same run by timing every candidate (``CANDIDATES``: BLAS's ``torch.mm`` with
    either operand order / layout, oneDNN's ``torch.ops.mkldnn._linear_pointwise``, which on this
    AVX-512 AMD CPU runs AVX-512 code where MKL runs its AVX2 code, and — where the CPU runs it —
    softclass's own gemm, ``training/small_gemm.c``, called through ctypes into a new tensor, as
    the compiled step calls it on one thread);
  - **torch**: the same, torch's candidates only (the goal's ceiling until session 12, when the
    step began to call its own gemm);
  - **mm**: every product as ``torch.mm`` in ``nn.Linear``'s layout (``a @ Wᵀ``, ``gᵀ @ a``,
    ``g @ W``), the ceiling this benchmark measured before (it under-states the machine: oneDNN
    computes the 128 × 128 layer's products 1.3–1.8× faster).

  The engine needs eight of the nine products (not the first layer's input gradient), so the
  nine-product ceiling is the conservative one; the eight-product figure is printed too.
* softclass.Classifier on float64 input (it trains in float32);
* MLPClassifier on float64 input (it computes in float64) and on float32 input (float32).

Samples/s = rows × epochs / fit seconds, from wall time and from the process's CPU time (one
thread: CPU time is the work itself, without the time slices other jobs take on the shared
machine). Prints softclass against the ceilings (goal ≥ 0.8 of the best nine-product one) and
against float32 MLPClassifier (goal ≥ 3), and the ceiling against float32 MLPClassifier; appends
two rows (wall, CPU) to benchmarks/RESULTS.md.
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
from softclass.training import blas, mlp_native
from softclass.training.batching import batch_bounds
from softclass.training.threads import choose_threads, torch_threads

N_FEATURES, HIDDEN, N_CLASSES, BATCH = 50, (128, 128), 10, 256
WIDTHS = (N_FEATURES, *HIDDEN, N_CLASSES)

SECTION = (
    "## Estimator throughput against the best matmul ceiling: 200,000x50, 50-128-128-10 Adam, "
    "batch 256 (benchmarks/estimator_throughput.py)"
)
HEADER = (
    "| date (UTC) | commit | machine | threads | rows x epochs | ceiling best samples/s "
    "(9 products; 8) | ceiling mm (9; 8) | softclass samples/s | MLPClassifier f64 / f32 "
    "samples/s | vs ceiling best (9; 8) | vs ceiling mm (9; 8) | vs f32 | vs f64 |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
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


def _onednn(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weightᵀ`` through oneDNN (torch's mkldnn linear operator)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")


# Ways to compute each product of layer k, from its input a (B, in), its output gradient g
# (B, out), its weight W (out, in) and Wt = Wᵀ stored contiguous (in, out).
CANDIDATES = {
    "forward": {
        "mm(a, W.t())": lambda a, g, w, wt: torch.mm(a, w.t()),
        "mm(a, Wt)": lambda a, g, w, wt: torch.mm(a, wt),
        "onednn(a, W)": lambda a, g, w, wt: _onednn(a, w),
    },
    "weight gradient": {
        "mm(g.t(), a)": lambda a, g, w, wt: torch.mm(g.t(), a),
        "mm(a.t(), g)": lambda a, g, w, wt: torch.mm(a.t(), g),
        "onednn(g.t(), a.t())": lambda a, g, w, wt: _onednn(g.t(), a.t()),
        "onednn(a.t(), g.t())": lambda a, g, w, wt: _onednn(a.t(), g.t()),
    },
    "input gradient": {
        "mm(g, W)": lambda a, g, w, wt: torch.mm(g, w),
        "mm(g, Wt.t())": lambda a, g, w, wt: torch.mm(g, wt.t()),
        "onednn(g, Wt)": lambda a, g, w, wt: _onednn(g, wt),
        "onednn(g, W.t())": lambda a, g, w, wt: _onednn(g, w.t()),
    },
}
_OWN_GEMM = mlp_native.own_sgemm()
if _OWN_GEMM is not None:
    _OWN = mlp_native.SGEMM(_OWN_GEMM)

    def _own(left: torch.Tensor, right: torch.Tensor, trans_a: bool, trans_b: bool):
        """op(left) @ op(right) through softclass's own gemm (row-major, as the step calls it)."""
        m = left.shape[1] if trans_a else left.shape[0]
        k = left.shape[0] if trans_a else left.shape[1]
        n = right.shape[0] if trans_b else right.shape[1]
        out = torch.empty(m, n)
        _OWN(101, 112 if trans_a else 111, 112 if trans_b else 111, m, n, k, 1.0,
             left.data_ptr(), left.shape[1], right.data_ptr(), right.shape[1], 0.0,
             out.data_ptr(), n)  # fmt: skip
        return out

    CANDIDATES["forward"]["own(a, Wᵀ)"] = lambda a, g, w, wt: _own(a, w, False, True)
    CANDIDATES["weight gradient"]["own(gᵀ, a)"] = lambda a, g, w, wt: _own(g, a, True, False)
    CANDIDATES["input gradient"]["own(g, W)"] = lambda a, g, w, wt: _own(g, w, False, False)
NN_LINEAR_LAYOUT = {
    "forward": "mm(a, W.t())",
    "weight gradient": "mm(g.t(), a)",
    "input gradient": "mm(g, W)",
}


class Products:
    """The products of training steps on random float32 tensors of the benchmark's shapes."""

    def __init__(self, n_rows: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.weights = [
            torch.randn(b, a, generator=generator) for a, b in itertools.pairwise(WIDTHS)
        ]
        self.weights_t = [weight.t().contiguous() for weight in self.weights]
        self.steps = [stop - start for start, stop in batch_bounds(n_rows, BATCH)]
        self.inputs = {
            rows: [torch.randn(rows, width, generator=generator) for width in WIDTHS]
            for rows in set(self.steps)
        }

    def fastest(
        self, repeats: int = 3, calls: int = 30
    ) -> tuple[dict[tuple[int, str], str], dict[tuple[int, str], str]]:
        """Per (layer, product): the candidate of CANDIDATES with the least CPU time at BATCH
        rows (each timed ``calls`` times per round, ``repeats`` interleaved rounds, medians);
        then the same among torch's candidates only."""
        chosen, chosen_torch = {}, {}
        tensors = self.inputs[BATCH]
        for layer, (weight, weight_t) in enumerate(zip(self.weights, self.weights_t, strict=True)):
            arguments = (tensors[layer], tensors[layer + 1], weight, weight_t)
            for product, candidates in CANDIDATES.items():
                seconds: dict[str, list[float]] = {name: [] for name in candidates}
                for _ in range(repeats):
                    for name, compute in candidates.items():
                        compute(*arguments)
                        started = time.process_time()
                        for _ in range(calls):
                            compute(*arguments)
                        seconds[name].append(time.process_time() - started)
                chosen[layer, product] = min(seconds, key=lambda n: statistics.median(seconds[n]))
                chosen_torch[layer, product] = min(
                    (name for name in seconds if not name.startswith("own")),
                    key=lambda n: statistics.median(seconds[n]),
                )
        return chosen, chosen_torch

    def run(
        self, epochs: int, choice: dict[tuple[int, str], str], with_first_input_gradient: bool
    ) -> None:
        """``epochs`` epochs of products, each computed as ``choice`` names (the first layer's
        input gradient only ``with_first_input_gradient``)."""
        plan = [
            [
                (CANDIDATES[product][choice[layer, product]], weight, weight_t)
                for product in CANDIDATES
                if product != "input gradient" or layer > 0 or with_first_input_gradient
            ]
            for layer, (weight, weight_t) in enumerate(
                zip(self.weights, self.weights_t, strict=True)
            )
        ]
        for rows in self.steps * epochs:
            tensors = self.inputs[rows]
            for layer, products in enumerate(plan):
                for compute, weight, weight_t in products:
                    compute(tensors[layer], tensors[layer + 1], weight, weight_t)


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
    products = Products(arguments.rows)
    epochs = arguments.epochs
    cases = {
        "best9": lambda: products.run(epochs, best, True),
        "best8": lambda: products.run(epochs, best, False),
        "torch9": lambda: products.run(epochs, best_torch, True),
        "mm9": lambda: products.run(epochs, nn_layout, True),
        "mm8": lambda: products.run(epochs, nn_layout, False),
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
        best, best_torch = products.fastest()
        nn_layout = {(layer, product): NN_LINEAR_LAYOUT[product] for layer, product in best}
        for _ in range(arguments.repeats):
            for name, run in cases.items():
                seconds[name].append(timed(run))
    n_samples = arguments.rows * epochs
    loaded = blas.gemm()
    step_gemm = "none (no BLAS)" if loaded is None else f"OpenBLAS {loaded.core}"
    if loaded is not None and threads == 1 and _OWN_GEMM is not None:
        step_gemm = f"softclass's own (AVX-512); OpenBLAS runs {loaded.core} kernels"
    if mlp_native.step_library() is None:  # e.g. a library older than its C sources
        step_gemm = f"none: no compiled step ({mlp_native.step_unavailable_reason()})"
    print(f"machine: {where}; medians of {arguments.repeats}; the step's float32 gemm: {step_gemm}")
    print(
        "fastest products: "
        + "; ".join(f"layer {layer} {product}: {name}" for (layer, product), name in best.items())
    )
    figures = {}
    for clock, index in (("wall", 0), ("CPU", 1)):
        speed = {
            name: n_samples / statistics.median(run[index] for run in runs)
            for name, runs in seconds.items()
        }
        ours = speed["softclass"]
        figures[clock] = speed
        print(
            f"[{clock}] samples/s: ceiling best {speed['best9']:,.0f} (9 products), "
            f"{speed['best8']:,.0f} (8); ceiling mm {speed['mm9']:,.0f} (9), {speed['mm8']:,.0f} "
            f"(8); ceiling torch {speed['torch9']:,.0f} (9); softclass {ours:,.0f}; "
            f"MLPClassifier {speed['sklearn32']:,.0f} float32, "
            f"{speed['sklearn64']:,.0f} float64"
        )
        print(
            f"[{clock}] softclass / ceiling best: {ours / speed['best9']:.2f} (9 products; goal "
            f">= 0.80), {ours / speed['best8']:.2f} (8); / ceiling mm: "
            f"{ours / speed['mm9']:.2f} (9), {ours / speed['mm8']:.2f} (8); / ceiling torch: "
            f"{ours / speed['torch9']:.2f} (9); softclass / "
            f"MLPClassifier: {ours / speed['sklearn32']:.2f}x float32 (goal >= 3), "
            f"{ours / speed['sklearn64']:.2f}x float64; ceiling best / MLPClassifier float32: "
            f"{speed['best9'] / speed['sklearn32']:.2f}x"
        )
    if not arguments.no_record:
        for clock in ("wall", "CPU"):
            speed = figures[clock]
            ours = speed["softclass"]
            append_row(
                SECTION,
                HEADER,
                f"| {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} | {commit()} | {where} "
                f"| {threads} | {arguments.rows} x {epochs} | {clock}: {speed['best9']:,.0f}; "
                f"{speed['best8']:,.0f} (torch's products only: {speed['torch9']:,.0f}) | "
                f"{speed['mm9']:,.0f}; {speed['mm8']:,.0f} | "
                f"{ours:,.0f} | {speed['sklearn64']:,.0f} / {speed['sklearn32']:,.0f} | "
                f"{ours / speed['best9']:.2f}; {ours / speed['best8']:.2f} | "
                f"{ours / speed['mm9']:.2f}; {ours / speed['mm8']:.2f} | "
                f"{ours / speed['sklearn32']:.2f}x | {ours / speed['sklearn64']:.2f}x |",
            )


if __name__ == "__main__":
    main()
