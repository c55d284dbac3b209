"""Cross entropy where clients run it: fwd+bwd against torch eager (and torch.compile), against
the machine's own floor, on 1 and 2 threads; fused linear + cross entropy against torch's.

``python -m benchmarks.cross_entropy_clients [--threads 1 2] [--compile] [--quick] [--repeats N]
[--shapes "(4, 5, 33, 17)" ...] [--no-linear]`` prints a markdown table (one subprocess per
thread count, so each has its own thread pools).
Called by ``python -m benchmarks.cross_entropy``, which records the table in RESULTS.md.

Floor of a shape (N, C), fp32, measured in the same run: the larger of (logits read once +
gradient written once, 8·N·C bytes, at the bandwidth of a large ``copy_``) and (one exp per
logit at the rate of ``torch.exp`` over a cached buffer, on the same threads). Times are medians
of interleaved repeats (softclass and torch alternate, so both see the same machine load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.linear_cross_entropy import linear_steps
from softclass import functional as S

SHAPES = [
    (256, 10),
    (256, 3),
    (64, 1000),
    (8, 21, 128, 128),
    (4, 5, 33, 17),
    (4096, 32000),
    (4096, 50257),
]
# The shapes of --quick (a loaded machine): all but the two large ones.
QUICK_SHAPES = SHAPES[:5]
# Tokens × hidden × vocabulary of the linear + cross entropy case (smaller than the issue's
# 4096 × 1024 × 32000, which takes ~15 s per step on the shared 2-core machine).
LINEAR = (1024, 512, 32000)
_BLOCK_SECONDS = 0.05
# What a time is measured in: wall time, or with --cpu-time this process's CPU time (all its
# threads), steadier on a loaded machine (descheduled time is not counted).
_clock = time.perf_counter


def _per_call(step: Callable[[], None], min_seconds: float) -> float:
    """Seconds per call of ``step``, averaged over enough calls to last ``min_seconds``."""
    calls, start = 0, _clock()
    while True:
        step()
        calls += 1
        elapsed = _clock() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def _interleaved(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each step, the steps alternating within each repeat."""
    for step in steps.values():
        step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            samples[name].append(_per_call(step, _BLOCK_SECONDS))
    return {name: statistics.median(values) for name, values in samples.items()}


def _loss_step(loss_function, logits: torch.Tensor, target: torch.Tensor):
    def step() -> None:
        loss_function(logits, target).backward()
        logits.grad = None

    return step


def _floors(repeats: int) -> tuple[float, float]:
    """(copy bandwidth in bytes/s counting read + write, exp rate in elements/s)."""
    source = torch.rand(1 << 26)
    target = torch.empty_like(source)
    copy_seconds = min(_per_call(lambda: target.copy_(source), 0.2) for _ in range(repeats))
    cached = torch.rand(1 << 14)
    out = torch.empty_like(cached)
    exp_seconds = min(_per_call(lambda: torch.exp(cached, out=out), 0.05) for _ in range(repeats))
    return 2 * source.numel() * 4 / copy_seconds, cached.numel() / exp_seconds


def _cross_entropy_rows(shape, repeats: int, use_compile: bool, floors) -> dict:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=generator).requires_grad_()
    item_shape = (shape[0], *shape[2:])
    target = torch.randint(0, shape[1], item_shape, generator=generator)
    steps = {
        "softclass": _loss_step(S.cross_entropy, logits, target),
        "torch": _loss_step(F.cross_entropy, logits, target),
    }
    if use_compile:
        steps["softclass compiled"] = _loss_step(torch.compile(S.cross_entropy), logits, target)
        steps["torch compiled"] = _loss_step(torch.compile(F.cross_entropy), logits, target)
    times = _interleaved(steps, repeats)
    bandwidth, exp_rate = floors
    floor = max(8 * logits.numel() / bandwidth, logits.numel() / exp_rate)
    return {"shape": list(shape), "times": times, "floor": floor}


def _linear_rows(repeats: int, use_compile: bool) -> dict:
    steps = linear_steps(*LINEAR, use_compile=use_compile)
    times = _interleaved(steps, repeats)
    return {"shape": list(LINEAR), "times": times}


def measure(
    threads: int,
    repeats: int,
    use_compile: bool,
    quick: bool,
    shapes: list[tuple[int, ...]] | None = None,
    linear: bool = True,
) -> dict:
    """All rows for one thread count (run in a process of its own); ``quick``: the
    ``QUICK_SHAPES``, no linear + cross entropy (for a loaded machine); ``shapes``: these
    instead."""
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    floors = _floors(repeats)
    shapes = shapes or (QUICK_SHAPES if quick else SHAPES)
    rows = [_cross_entropy_rows(shape, repeats, use_compile, floors) for shape in shapes]
    return {
        "threads": threads,
        "copy_gb_s": floors[0] / 1e9,
        "exp_g_s": floors[1] / 1e9,
        "rows": rows,
        "linear": _linear_rows(repeats, use_compile) if linear and not quick else None,
        "load": [load_before, os.getloadavg()[0]],
        "clock": "process CPU time" if _clock is time.process_time else "wall time",
    }


def _format(result: dict) -> str:
    compiled = "softclass compiled" in result["rows"][0]["times"]
    header = (
        f"\n**{result['threads']} thread(s)**: copy {result['copy_gb_s']:.1f} GB/s, "
        f"exp {result['exp_g_s']:.2f} G/s, load average {result['load'][0]:.1f} before, "
        f"{result['load'][1]:.1f} after, {result.get('clock', 'wall time')}\n\n"
        "| shape | softclass ms | torch ms | softclass ÷ torch | speed-up | floor ms | "
        "% of floor |" + (" softclass in compile ms | torch.compile ms | ÷ |" if compiled else "")
    )
    lines = [header, "|---" * (7 + 3 * compiled) + "|"]
    for row in result["rows"]:
        times = row["times"]
        ours, theirs = times["softclass"], times["torch"]
        line = (
            f"| {tuple(row['shape'])} | {ours * 1e3:.3f} | {theirs * 1e3:.3f} | "
            f"{ours / theirs:.2f} | {theirs / ours:.2f}× | {row['floor'] * 1e3:.2f} | "
            f"{100 * row['floor'] / ours:.0f} % |"
        )
        if compiled:
            ours_compiled, theirs_compiled = times["softclass compiled"], times["torch compiled"]
            line += (
                f" {ours_compiled * 1e3:.3f} | {theirs_compiled * 1e3:.3f} | "
                f"{ours_compiled / theirs_compiled:.2f} |"
            )
        lines.append(line)
    if result["linear"] is None:
        return "\n".join(lines)
    linear = result["linear"]["times"]
    lines.append(
        f"\nlinear + CE {tuple(result['linear']['shape'])} (tokens, H, V): softclass "
        f"{linear['softclass'] * 1e3:.0f} ms, torch eager {linear['torch'] * 1e3:.0f} ms "
        f"(speed-up {linear['torch'] / linear['softclass']:.2f}×), three products alone "
        f"{linear['products'] * 1e3:.0f} ms ({100 * linear['products'] / linear['softclass']:.0f} "
        "% of softclass's time)"
        + (
            f"; torch.compile of linear + CE {linear['torch compiled'] * 1e3:.0f} ms "
            f"(softclass ÷ it {linear['softclass'] / linear['torch compiled']:.2f})"
            if "torch compiled" in linear
            else ""
        )
    )
    return "\n".join(lines)


def run(
    threads: list[int],
    repeats: int,
    use_compile: bool,
    quick: bool = False,
    shapes: list[str] | None = None,
    linear: bool = True,
    cpu_time: bool = False,
) -> str:
    """Measure each thread count in a subprocess; return the markdown of all."""
    parts = []
    for count in threads:
        command = [sys.executable, "-m", "benchmarks.cross_entropy_clients", "--child"]
        command += ["--threads", str(count), "--repeats", str(repeats)]
        command += ["--compile"] if use_compile else []
        command += ["--quick"] if quick else []
        command += ["--shapes", *shapes] if shapes else []
        command += [] if linear else ["--no-linear"]
        command += ["--cpu-time"] if cpu_time else []
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        parts.append(_format(json.loads(output.strip().splitlines()[-1])))
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also torch.compile both")
    parser.add_argument("--quick", action="store_true", help="five shapes, no linear + CE")
    parser.add_argument(
        "--shapes", nargs="+", help='only these shapes, e.g. "(4, 5, 33, 17)" "(4096, 50257)"'
    )
    parser.add_argument("--no-linear", action="store_true", help="no linear + CE row")
    parser.add_argument(
        "--cpu-time", action="store_true", help="process CPU time, not wall time (loaded machine)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    linear = not arguments.no_linear
    if arguments.child:
        global _clock
        _clock = time.process_time if arguments.cpu_time else time.perf_counter
        shapes = [_shape(text) for text in arguments.shapes] if arguments.shapes else None
        result = measure(
            *(arguments.threads[0], arguments.repeats, arguments.compile, arguments.quick),
            shapes,
            linear,
        )
        print(json.dumps(result))
        return
    print(
        run(
            *(arguments.threads, arguments.repeats, arguments.compile, arguments.quick),
            arguments.shapes,
            linear,
            arguments.cpu_time,
        )
    )


def _shape(text: str) -> tuple[int, ...]:
    """``"(4, 5, 33, 17)"`` (or ``4,5,33,17``) as a tuple of ints."""
    numbers = text.strip().strip("()").split(",")
    return tuple(int(number) for number in numbers if number.strip())


if __name__ == "__main__":
    main()
