"""The compiled step's own float32 gemm (training/small_gemm.c) against OpenBLAS, per product.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.small_gemm``.

The nine products of one training step of a 50-128-128-10 network at batch 256 (per layer: the
forward ``a @ Wᵀ``, the weight gradient ``gᵀ @ a``, the input gradient ``g @ W``), each called
through ctypes in the layout the step uses, into the same preallocated output, on one thread:
softclass's own gemm and the ``scipy-openblas32`` wheel's ``cblas_sgemm`` (the kernels OpenBLAS
runs are printed: ``OPENBLAS_CORETYPE`` chooses them; this machine's environment sets
``Haswell``). Best of ``--repeats`` rounds of ``--calls`` calls each; the two are interleaved.
Prints microseconds per product and per step and the ratio (OpenBLAS ÷ own).
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from benchmarks._results import machine
from softclass.training import blas, mlp_native

BATCH, WIDTHS = 256, (50, 128, 128, 10)


def products():
    """(name, arguments after the function) of the step's nine products."""
    generator = torch.Generator().manual_seed(0)
    cases = []
    for layer, (n_in, n_out) in enumerate(itertools.pairwise(WIDTHS)):
        a = torch.randn(BATCH, n_in, generator=generator)
        g = torch.randn(BATCH, n_out, generator=generator)
        w = torch.randn(n_out, n_in, generator=generator)
        out = torch.empty(BATCH, max(n_in, n_out))  # kept alive by the tuple below
        p = out.data_ptr()
        cases += [
            (f"layer {layer} forward",
             (111, 112, BATCH, n_out, n_in, a, n_in, w, n_in, out, p, n_out)),
            (f"layer {layer} weight gradient",
             (112, 111, n_out, n_in, BATCH, g, n_out, a, n_in, out, p, n_in)),
            (f"layer {layer} input gradient",
             (111, 111, BATCH, n_in, n_out, g, n_out, w, n_in, out, p, n_in)),
        ]  # fmt: skip
    return cases


def seconds(function, arguments, calls: int) -> float:
    trans_a, trans_b, m, n, k, a, lda, b, ldb, _out, pointer, ldc = arguments
    a_pointer, b_pointer = a.data_ptr(), b.data_ptr()
    started = time.perf_counter()
    for _ in range(calls):
        function(101, trans_a, trans_b, m, n, k, 1.0, a_pointer, lda, b_pointer, ldb, 0.0,
                 pointer, ldc)  # fmt: skip
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    arguments = parser.parse_args()
    own, loaded = mlp_native.own_sgemm(), blas.gemm()
    if own is None or loaded is None:
        raise SystemExit("the own gemm or OpenBLAS is not available on this machine")
    loaded.set_threads(1)
    functions = {"own": mlp_native.SGEMM(own), "openblas": mlp_native.SGEMM(loaded.sgemm)}
    torch.set_num_threads(1)
    print(f"machine: {machine()}; OpenBLAS runs {loaded.core} kernels; one thread")
    totals = dict.fromkeys(functions, 0.0)
    for name, case in products():
        best = dict.fromkeys(functions, float("inf"))
        for _ in range(arguments.repeats):
            for which, function in functions.items():
                best[which] = min(best[which], seconds(function, case, arguments.calls))
        for which in functions:
            totals[which] += best[which]
        print(
            f"{name}: own {best['own'] * 1e6:.1f} us, OpenBLAS {best['openblas'] * 1e6:.1f} us "
            f"(OpenBLAS / own {best['openblas'] / best['own']:.2f})"
        )
    ratio = totals["openblas"] / totals["own"]
    print(
        f"step (9 products): own {totals['own'] * 1e6:.1f} us, OpenBLAS "
        f"{totals['openblas'] * 1e6:.1f} us; OpenBLAS / own {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
