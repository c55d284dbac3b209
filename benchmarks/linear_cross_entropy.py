"""Fused linear + cross entropy against torch eager's linear + cross entropy, and against the
three matrix products alone (the sgemm ceiling), at the issue's 4096 tokens × H 1024 × V 32000.

``python -m benchmarks.linear_cross_entropy [--threads 1 2] [--repeats 3] [--shape 4096 1024
32000] [--no-memory]`` prints one line per thread count (each in a subprocess of its own, so each
has its own thread pools) and the peak extra memory of one forward + backward of each (a fresh
process each, :mod:`softclass.jobs.bench`).

Times are medians of interleaved repeats (softclass, torch and the products alternate, so all see
the same machine load), in wall seconds and in process CPU seconds (all threads; steadier than
wall time on a loaded machine). The ceiling is logits = h Wᵀ, ∂h = G W and ∂W = Gᵀ h as three
``torch.mm`` calls over all rows: no implementation that computes all three products can be
faster than it, so torch ÷ ceiling is the largest speed-up any fused kernel could reach here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from softclass import functional as S
from softclass.jobs import bench

SHAPE = (4096, 1024, 32000)  # tokens, hidden features, vocabulary: issue 23's case


def linear_steps(tokens: int, hidden: int, vocabulary: int, use_compile: bool = False) -> dict:
    """One forward + backward each of softclass's linear_cross_entropy, torch eager's linear +
    cross entropy, the three matrix products alone (the ceiling) and, with ``use_compile``,
    torch.compile of linear + cross entropy, on the same seeded inputs."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(tokens, hidden, generator=generator).requires_grad_()
    weight = (torch.randn(vocabulary, hidden, generator=generator) * 0.02).requires_grad_()
    target = torch.randint(0, vocabulary, (tokens,), generator=generator)

    def fused() -> None:
        S.linear_cross_entropy(features, weight, target).backward()
        features.grad = weight.grad = None

    def unfused() -> None:
        F.cross_entropy(F.linear(features, weight), target).backward()
        features.grad = weight.grad = None

    def products() -> None:
        logits = features.detach() @ weight.detach().t()
        logits @ weight.detach()
        logits.t() @ features.detach()

    steps = {"softclass": fused, "torch": unfused, "products": products}
    if use_compile:
        compiled = torch.compile(lambda h, w, t: F.cross_entropy(F.linear(h, w), t))

        def torch_compiled() -> None:
            compiled(features, weight, target).backward()
            features.grad = weight.grad = None

        steps["torch compiled"] = torch_compiled
    return steps


def measure(threads: int, repeats: int, shape: tuple[int, int, int]) -> dict:
    """Median wall and CPU seconds of each step on ``threads`` threads (this process)."""
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    steps = linear_steps(*shape)
    for step in steps.values():
        step()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            step()
            wall[name].append(time.perf_counter() - wall_start)
            cpu[name].append(time.process_time() - cpu_start)
    return {
        "threads": threads,
        "wall": {name: statistics.median(values) for name, values in wall.items()},
        "cpu": {name: statistics.median(values) for name, values in cpu.items()},
        "load": [load_before, os.getloadavg()[0]],
    }


def _format(result: dict) -> str:
    parts = [f"| {result['threads']} |"]
    for kind in ("wall", "cpu"):
        times = result[kind]
        parts.append(
            f" {times['softclass']:.2f} / {times['torch']:.2f} / {times['products']:.2f} | "
            f"{times['torch'] / times['softclass']:.2f}× | "
            f"{100 * times['products'] / times['softclass']:.0f} % | "
            f"{times['torch'] / times['products']:.2f}× |"
        )
    parts.append(f" {result['load'][0]:.1f} → {result['load'][1]:.1f} |")
    return "".join(parts)


HEADER = (
    "| threads | wall s softclass / torch / ceiling | speed-up | % of ceiling | torch ÷ ceiling "
    "| CPU s softclass / torch / ceiling | speed-up | % of ceiling | torch ÷ ceiling | load |\n"
    + "|---" * 10
    + "|"
)


def _memory(shape: tuple[int, int, int]) -> str:
    tokens, hidden, vocabulary = shape
    case = bench.Case(tokens, vocabulary, hidden=hidden)
    result = bench.run_benchmarks((case,), repeats=1)[0]
    if result.torch_peak_bytes is None or result.softclass_peak_bytes is None:
        return "peak extra memory: not measurable here (no /proc/self/clear_refs)"
    mib = 1 << 20
    return (
        f"peak extra memory of one forward + backward: softclass "
        f"{result.softclass_peak_bytes / mib:.0f} MiB, torch {result.torch_peak_bytes / mib:.0f} "
        f"MiB (1/{result.torch_peak_bytes / result.softclass_peak_bytes:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=list(SHAPE))
    parser.add_argument("--no-memory", action="store_true", help="skip the peak memory runs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    shape = tuple(arguments.shape)
    if arguments.child:
        print(json.dumps(measure(arguments.threads[0], arguments.repeats, shape)))
        return
    print(f"linear + CE {shape} (tokens, H, V), fp32, fwd+bwd\n\n{HEADER}")
    for count in arguments.threads:
        command = [sys.executable, "-m", "benchmarks.linear_cross_entropy", "--child"]
        command += ["--threads", str(count), "--repeats", str(arguments.repeats)]
        command += ["--shape", *map(str, shape)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        print(_format(json.loads(output.strip().splitlines()[-1])), flush=True)
    if not arguments.no_memory:
        print("\n" + _memory(shape))


if __name__ == "__main__":
    main()
