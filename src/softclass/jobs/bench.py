"""Measure softclass's cross entropy against torch's, in one run: time and peak extra memory.

Time: torch and softclass forward+backward runs are interleaved in one process (so both see the
same competing load on a shared machine); the median wall time and the median process CPU time
(all threads) of ``repeats`` runs each are reported, with their ratio. Memory: each
(case, implementation) runs once in a fresh subprocess whose peak resident set is reset
(``/proc/self/clear_refs``) after the inputs are made; the peak RSS growth during forward+backward
is the "extra memory" (the gradient the backward returns counts, as it must exist).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as torch_functional

from softclass import functional
from softclass.io import atomic_write_json

__all__ = ["DEFAULT_CASES", "Case", "CaseResult", "machine_description", "run_benchmarks"]


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmarked shape: cross entropy of (n_rows, n_classes) logits, or linear + CE."""

    n_rows: int
    n_classes: int
    dtype: str = "float32"  # a torch dtype name
    hidden: int = 0  # > 0: linear + cross entropy with this many input features

    @property
    def name(self) -> str:
        kind = f"linear+CE H={self.hidden} " if self.hidden else "CE "
        return f"{kind}{self.n_rows}x{self.n_classes} {self.dtype}"

    @property
    def logits_bytes(self) -> int:
        return self.n_rows * self.n_classes * getattr(torch, self.dtype).itemsize


DEFAULT_CASES = (
    Case(4096, 32768),
    Case(4096, 32768, "bfloat16"),
    Case(1024, 131072),
    Case(1024, 131072, "bfloat16"),
    Case(16384, 1000),
    Case(65536, 10),
    Case(256, 3),
    Case(8192, 32768, hidden=512),
)


@dataclasses.dataclass
class CaseResult:
    """Medians over repeats (seconds) and peak extra memory (bytes) of one case."""

    case: Case
    torch_seconds: float
    softclass_seconds: float
    torch_cpu_seconds: float
    softclass_cpu_seconds: float
    torch_peak_bytes: int | None
    softclass_peak_bytes: int | None

    @property
    def speedup(self) -> float:
        return self.torch_seconds / self.softclass_seconds

    @property
    def cpu_speedup(self) -> float:
        return self.torch_cpu_seconds / self.softclass_cpu_seconds


def _make_inputs(case: Case, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, case.dtype)
    target = torch.randint(0, case.n_classes, (case.n_rows,), generator=generator)
    if case.hidden:
        hidden = torch.randn(case.n_rows, case.hidden, generator=generator).to(dtype)
        weight = torch.randn(case.n_classes, case.hidden, generator=generator) / case.hidden**0.5
        return {"hidden": hidden, "weight": weight.to(dtype), "target": target}
    logits = torch.randn(case.n_rows, case.n_classes, generator=generator).to(dtype)
    return {"logits": logits, "target": target}


def _step(case: Case, implementation: str, inputs: dict[str, torch.Tensor]) -> Callable[[], None]:
    """A closure running one forward+backward of ``implementation`` ("torch" or "softclass")."""
    target = inputs["target"]
    if case.hidden:

        def linear_step() -> None:
            hidden = inputs["hidden"].detach().requires_grad_()
            weight = inputs["weight"].detach().requires_grad_()
            if implementation == "torch":
                loss = torch_functional.cross_entropy(
                    torch_functional.linear(hidden, weight), target
                )
            else:
                loss = functional.linear_cross_entropy(hidden, weight, target)
            loss.backward()

        return linear_step
    loss_function = (
        torch_functional.cross_entropy if implementation == "torch" else functional.cross_entropy
    )

    def step() -> None:
        logits = inputs["logits"].detach().requires_grad_()
        loss_function(logits, target).backward()

    return step


def _peak_extra_bytes_in_subprocess(case: Case, implementation: str) -> int | None:
    """Peak RSS growth of one forward+backward in a fresh interpreter (None if not measurable)."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    with tempfile.TemporaryDirectory() as directory:
        result_path = Path(directory) / "result.json"
        code = (
            "import sys, json; from softclass.jobs.bench import _memory_child; "
            "_memory_child(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3])"
        )
        subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                json.dumps(dataclasses.asdict(case)),
                implementation,
                str(result_path),
            ],
            check=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        return int(json.loads(result_path.read_text())["peak_extra_bytes"])


def _resident_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def _memory_child(case_fields: dict, implementation: str, result_path: str) -> None:
    """Entry of the memory subprocess: make inputs, warm up on a small case, measure, write JSON."""
    case = Case(**case_fields)
    warmup = Case(8, min(case.n_classes, 64), case.dtype, min(case.hidden, 8))
    _step(warmup, implementation, _make_inputs(warmup))()
    step = _step(case, implementation, _make_inputs(case))
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as clear_refs:
        clear_refs.write("5")  # reset the peak resident set (VmHWM) to the current one
    baseline_kib = _resident_kib("VmRSS:")
    step()
    peak_kib = _resident_kib("VmHWM:")
    atomic_write_json(result_path, {"peak_extra_bytes": (peak_kib - baseline_kib) * 1024})


def _time_interleaved(case: Case, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of torch and softclass, runs alternating, after one warm-up."""
    inputs = _make_inputs(case)
    steps = {name: _step(case, name, inputs) for name in ("torch", "softclass")}
    for step in steps.values():
        step()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            step()
            samples[name].append(
                (time.perf_counter() - wall_start, time.process_time() - cpu_start)
            )
    return {
        name: (statistics.median(s[0] for s in runs), statistics.median(s[1] for s in runs))
        for name, runs in samples.items()
    }


def run_benchmarks(
    cases: tuple[Case, ...] = DEFAULT_CASES,
    repeats: int = 5,
    measure_memory: bool = True,
    on_result: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    """Benchmark each case (time interleaved in this process, memory in subprocesses).

    ``on_result`` is called after each case (for progress output). Linear + CE cases run at most
    3 repeats (each is seconds long).
    """
    results = []
    for case in cases:
        timings = _time_interleaved(case, min(repeats, 3) if case.hidden else repeats)
        peaks = {
            name: _peak_extra_bytes_in_subprocess(case, name) if measure_memory else None
            for name in ("torch", "softclass")
        }
        result = CaseResult(
            case,
            timings["torch"][0],
            timings["softclass"][0],
            timings["torch"][1],
            timings["softclass"][1],
            peaks["torch"],
            peaks["softclass"],
        )
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def machine_description() -> str:
    """CPU model, core count, torch version and threads, and the 1-minute load average."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{model}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load average {load:.1f} at the end"
    )


def format_markdown(results: list[CaseResult]) -> str:
    """A markdown table of the results: times, ratios, peak extra memory relative to logits."""

    def milliseconds(seconds: float) -> str:
        """3 significant digits below 100 ms (sub-millisecond cases), whole ms above."""
        value = seconds * 1e3
        return f"{value:.0f}" if value >= 100 else f"{value:.3g}"

    def mib(value: int | None) -> str:
        return "n/a" if value is None else f"{value / 2**20:.0f}"

    def memory_ratio(result: CaseResult) -> str:
        if result.torch_peak_bytes is None or result.softclass_peak_bytes is None:
            return "n/a"
        logits = result.case.logits_bytes
        torch_ratio = result.torch_peak_bytes / logits
        ours = result.softclass_peak_bytes / logits
        return f"{torch_ratio:.2f}× / {ours:.2f}×"

    lines = [
        "| case | torch ms | softclass ms | speed-up (wall) | speed-up (CPU time) | "
        "peak extra MiB torch / softclass | extra ÷ logits size torch / softclass |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        lines.append(
            f"| {result.case.name} | {milliseconds(result.torch_seconds)} | "
            f"{milliseconds(result.softclass_seconds)} | {result.speedup:.2f}× | "
            f"{result.cpu_speedup:.2f}× | {mib(result.torch_peak_bytes)} / "
            f"{mib(result.softclass_peak_bytes)} | {memory_ratio(result)} |"
        )
    return "\n".join(lines)
