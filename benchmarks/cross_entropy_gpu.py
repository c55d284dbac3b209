"""Time the Triton cross-entropy kernels against PyTorch (and Liger-Kernel when importable) on CUDA.

Run from the repository root: ``python -m benchmarks.cross_entropy_gpu`` (softclass importable,
e.g. ``PYTHONPATH=src``). Prints, per shape, forward+backward time (median of CUDA-event timed
iterations, incoming gradient 1 from ``loss.backward()``), the ratio to torch measured in the same
run, peak extra memory, and the achieved bandwidth of the fused kernels: bytes moved by the
algorithm (forward reads the logits once; backward reads them once and writes the gradient once:
3·N·C·bytes, the O(N) row statistics ignored) divided by the time, and its fraction of the
device's peak memory bandwidth. Appends one row per shape to
``benchmarks/results/cross_entropy_gpu.csv``.
"""

from __future__ import annotations

import csv
import datetime
import io
import platform
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from softclass.io import atomic_write_text
from softclass.kernels import triton as triton_kernels

RESULTS_PATH = Path(__file__).parent / "results" / "cross_entropy_gpu.csv"

# Peak HBM bandwidth (TB/s) from the vendors' spec sheets; first substring of the device name
# that matches wins, so the more specific names come first.
PEAK_BANDWIDTH_TBPS = [
    ("H100 PCIe", 2.0),
    ("H100 NVL", 3.9),
    ("H100", 3.35),  # SXM5, "NVIDIA H100 80GB HBM3"
    ("H200", 4.8),
    ("A100-SXM4-80GB", 2.039),
    ("A100 80GB PCIe", 1.935),
    ("A100", 1.555),  # 40 GB parts
]

# (rows, classes, dtype): LLM-vocabulary shapes; 8192 × 128256 bf16 is the headline one.
CROSS_ENTROPY_SHAPES = [
    (4096, 32000, torch.bfloat16),
    (8192, 50257, torch.bfloat16),
    (8192, 128256, torch.bfloat16),
    (8192, 128256, torch.float32),
]
# (rows, hidden, classes, dtype) for linear + cross entropy.
LINEAR_SHAPES = [(8192, 4096, 128256, torch.bfloat16)]
WARMUP_ITERATIONS = 3
TIMED_ITERATIONS = 20


def peak_bandwidth_tbps(device_name: str) -> float | None:
    """Peak memory bandwidth in TB/s for a CUDA device name, None if not in the table."""
    for fragment, tbps in PEAK_BANDWIDTH_TBPS:
        if fragment in device_name:
            return tbps
    return None


def time_forward_backward(step: Callable[[], None]) -> tuple[float, int]:
    """Median milliseconds of ``step`` over timed iterations, and the peak memory (bytes)
    allocated above what was live before the first call."""
    for _ in range(WARMUP_ITERATIONS):
        step()
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times_ms = []
    for _ in range(TIMED_ITERATIONS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times_ms.append(start.elapsed_time(end))
    return statistics.median(times_ms), torch.cuda.max_memory_allocated() - baseline


def _liger_cross_entropy() -> Callable | None:
    try:
        from liger_kernel.transformers.functional import liger_cross_entropy
    except ImportError:
        return None
    return liger_cross_entropy


def _cross_entropy_step(loss_fn: Callable, logits: torch.Tensor, target: torch.Tensor):
    def step() -> None:
        logits.grad = None
        loss_fn(logits, target).backward()

    return step


def bench_cross_entropy(n_rows: int, n_classes: int, dtype: torch.dtype, peak: float | None):
    logits = torch.randn(n_rows, n_classes, device="cuda", dtype=dtype, requires_grad=True)
    target = torch.randint(0, n_classes, (n_rows,), device="cuda")
    providers = {
        "softclass": triton_kernels.fused_cross_entropy,
        "torch": F.cross_entropy,
    }
    liger = _liger_cross_entropy()
    if liger is not None:  # overwrites the logits with gradients: timing only
        providers["liger"] = liger
    results = {
        name: time_forward_backward(_cross_entropy_step(fn, logits, target))
        for name, fn in providers.items()
    }
    moved_bytes = 3 * n_rows * n_classes * logits.element_size()
    ours_ms = results["softclass"][0]
    achieved_tbps = moved_bytes / (ours_ms * 1e-3) / 1e12
    return {
        "kind": "cross_entropy",
        "shape": f"{n_rows}x{n_classes}",
        "dtype": str(dtype).removeprefix("torch."),
        **{f"{name}_ms": f"{ms:.3f}" for name, (ms, _) in results.items()},
        **{f"{name}_peak_mb": f"{mem / 2**20:.0f}" for name, (_, mem) in results.items()},
        "torch_over_softclass": f"{results['torch'][0] / ours_ms:.2f}",
        "achieved_tbps": f"{achieved_tbps:.3f}",
        "fraction_of_peak": f"{achieved_tbps / peak:.3f}" if peak else "",
        "two_pass_bound_ms": f"{2 * n_rows * n_classes * logits.element_size() / peak / 1e9:.3f}"
        if peak
        else "",
    }


def bench_linear_cross_entropy(n_rows: int, hidden_size: int, n_classes: int, dtype):
    hidden = torch.randn(n_rows, hidden_size, device="cuda", dtype=dtype, requires_grad=True)
    weight = torch.randn(n_classes, hidden_size, device="cuda", dtype=dtype) / hidden_size**0.5
    weight.requires_grad_()
    target = torch.randint(0, n_classes, (n_rows,), device="cuda")

    def step(loss_fn):
        def run() -> None:
            hidden.grad = weight.grad = None
            loss_fn().backward()

        return run

    ours_ms, ours_mem = time_forward_backward(
        step(lambda: triton_kernels.linear_cross_entropy(hidden, weight, target))
    )
    torch_ms, torch_mem = time_forward_backward(
        step(lambda: F.cross_entropy(hidden @ weight.T, target))
    )
    flops = 6 * n_rows * hidden_size * n_classes
    return {
        "kind": "linear_cross_entropy",
        "shape": f"{n_rows}x{hidden_size}->{n_classes}",
        "dtype": str(dtype).removeprefix("torch."),
        "softclass_ms": f"{ours_ms:.3f}",
        "torch_ms": f"{torch_ms:.3f}",
        "softclass_peak_mb": f"{ours_mem / 2**20:.0f}",
        "torch_peak_mb": f"{torch_mem / 2**20:.0f}",
        "torch_over_softclass": f"{torch_ms / ours_ms:.2f}",
        "softclass_tflops": f"{flops / (ours_ms * 1e-3) / 1e12:.1f}",
    }


def _commit() -> str:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return completed.stdout.strip()


def append_results(rows: list[dict[str, str]], machine: str) -> None:
    """Append ``rows`` (with date, commit, machine) to RESULTS_PATH, keeping earlier rows."""
    stamp = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": machine,
    }
    previous = RESULTS_PATH.read_text() if RESULTS_PATH.exists() else ""
    previous_rows = list(csv.DictReader(io.StringIO(previous)))
    all_rows = previous_rows + [{**stamp, **row} for row in rows]
    fields = list(dict.fromkeys(key for row in all_rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(all_rows)
    atomic_write_text(RESULTS_PATH, buffer.getvalue())


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit(
            "cross_entropy_gpu: no CUDA device found; this benchmark times GPU kernels only."
        )
    if not triton_kernels.triton_available():
        raise SystemExit("cross_entropy_gpu: triton is not importable; pip install triton.")
    device_name = torch.cuda.get_device_name()
    peak = peak_bandwidth_tbps(device_name)
    peak_text = f"{peak} TB/s" if peak else "unknown (not in PEAK_BANDWIDTH_TBPS)"
    print(f"device: {device_name}, peak memory bandwidth {peak_text}")
    rows = []
    for n_rows, n_classes, dtype in CROSS_ENTROPY_SHAPES:
        row = bench_cross_entropy(n_rows, n_classes, dtype, peak)
        print("  ".join(f"{key}={value}" for key, value in row.items()))
        rows.append(row)
        torch.cuda.empty_cache()
    for shape in LINEAR_SHAPES:
        row = bench_linear_cross_entropy(*shape)
        print("  ".join(f"{key}={value}" for key, value in row.items()))
        rows.append(row)
        torch.cuda.empty_cache()
    append_results(rows, f"{device_name} / {platform.node()}")
    print(f"appended {len(rows)} rows to {RESULTS_PATH}")


if __name__ == "__main__":
    main()
