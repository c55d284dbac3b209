"""softclass against torch eager *and* torch.compile, and the paths issue 15 measured as holes.

Run from the repository root: ``python -m benchmarks.cross_entropy_compile [--repeats N]
[--rows 4096] [--classes 32768]``. Forward+backward of each case, implementations interleaved in
one process (the same competing load for all), median wall and CPU (process, all threads) time;
prints each ratio "reference / softclass" (> 1: softclass faster) and appends a section to
benchmarks/RESULTS.md.

Cases:
* CE: ``F.cross_entropy`` eager, ``torch.compile(F.cross_entropy)``, softclass eager, and
  softclass inside ``torch.compile`` (its registered op in an inductor graph).
* nll(log_softmax): ``nll_loss(log_softmax(x, 1), t)`` with torch's functions and with softclass's.
* transposed: cross entropy of ``(C, N)`` memory viewed as ``(N, C)`` logits (class stride N).
* small: 256×3 cross entropy (per-call overhead), 200 calls per timing, with torch's threads
  and with one thread.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks import _results
from softclass import functional as S


def _step(loss: Callable, logits: torch.Tensor, target: torch.Tensor, calls: int = 1):
    def run() -> None:
        for _ in range(calls):
            leaf = logits.detach().requires_grad_()
            loss(leaf, target).backward()

    return run


def _interleaved(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, tuple]:
    """Median (wall, CPU) seconds per implementation, after one warm-up run each."""
    for step in steps.values():
        step()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            samples[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: (statistics.median(s[0] for s in runs), statistics.median(s[1] for s in runs))
        for name, runs in samples.items()
    }


def _nll_of_log_softmax(module):
    return lambda logits, target: module.nll_loss(module.log_softmax(logits, 1), target)


def run(repeats: int, rows: int, classes: int) -> list[tuple[str, str, str, dict]]:
    """[(case, reference name, softclass name, timings)] for every comparison."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, classes, generator=generator)
    target = torch.randint(0, classes, (rows,), generator=generator)
    compile_seconds = {}
    compiled = {}
    for name, loss in (
        ("torch.compile", F.cross_entropy),
        ("softclass in compile", S.cross_entropy),
    ):
        start = time.perf_counter()
        compiled[name] = torch.compile(loss)
        _step(compiled[name], logits, target)()
        compile_seconds[name] = time.perf_counter() - start
    timings = _interleaved(
        {
            "torch eager": _step(F.cross_entropy, logits, target),
            "torch.compile": _step(compiled["torch.compile"], logits, target),
            "softclass eager": _step(S.cross_entropy, logits, target),
            "softclass in compile": _step(compiled["softclass in compile"], logits, target),
        },
        repeats,
    )
    results = [
        (f"CE {rows}x{classes}", "torch eager", "softclass eager", timings),
        (f"CE {rows}x{classes}", "torch.compile", "softclass eager", timings),
        (f"CE {rows}x{classes}", "torch.compile", "softclass in compile", timings),
    ]
    nll = _interleaved(
        {
            "torch": _step(_nll_of_log_softmax(F), logits, target),
            "softclass": _step(_nll_of_log_softmax(S), logits, target),
        },
        repeats,
    )
    results.append((f"nll(log_softmax) {rows}x{classes}", "torch", "softclass", nll))
    transposed = torch.randn(classes, rows, generator=generator).t()
    strided = _interleaved(
        {
            "torch": _step(F.cross_entropy, transposed, target),
            "softclass": _step(S.cross_entropy, transposed, target),
        },
        repeats,
    )
    results.append((f"CE transposed {rows}x{classes}", "torch", "softclass", strided))
    small_logits = torch.randn(256, 3, generator=generator)
    small_target = torch.randint(0, 3, (256,), generator=generator)
    small = _interleaved(
        {
            "torch": _step(F.cross_entropy, small_logits, small_target, calls=200),
            "softclass": _step(S.cross_entropy, small_logits, small_target, calls=200),
        },
        max(repeats, 5),
    )
    results.append(("CE 256x3 (200 calls)", "torch", "softclass", small))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's per-op thread-pool cost out of the comparison
    try:
        one_thread = _interleaved(
            {
                "torch": _step(F.cross_entropy, small_logits, small_target, calls=200),
                "softclass": _step(S.cross_entropy, small_logits, small_target, calls=200),
            },
            max(repeats, 5),
        )
    finally:
        torch.set_num_threads(threads)
    results.append(("CE 256x3 (200 calls, 1 thread)", "torch", "softclass", one_thread))
    return results, compile_seconds


def format_markdown(results, compile_seconds) -> str:
    lines = [
        "| case | reference | reference ms | softclass | softclass ms | ratio wall | ratio CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, reference, ours, timings in results:
        (ref_wall, ref_cpu), (our_wall, our_cpu) = timings[reference], timings[ours]
        lines.append(
            f"| {case} | {reference} | {ref_wall * 1e3:.1f} | {ours} | {our_wall * 1e3:.1f} | "
            f"{ref_wall / our_wall:.2f}× | {ref_cpu / our_cpu:.2f}× |"
        )
    compile_note = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in compile_seconds.items())
    return "\n".join(lines) + f"\n\nFirst call (compile included): {compile_note}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation")
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--classes", type=int, default=32768)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    arguments = parser.parse_args()
    results, compile_seconds = run(arguments.repeats, arguments.rows, arguments.classes)
    table = format_markdown(results, compile_seconds)
    print(table)
    if arguments.no_record:
        return
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    command = (
        f"python -m benchmarks.cross_entropy_compile --repeats {arguments.repeats} "
        f"--rows {arguments.rows} --classes {arguments.classes}"
    )
    section = (
        f"\n## {stamp}, commit {_results.commit()} (torch.compile and the issue-15 paths)\n\n"
        f"`{command}` on {_results.machine()}.\n\n{table}\n"
    )
    text = _results.RESULTS.read_text(encoding="utf-8") if _results.RESULTS.exists() else ""
    _results.atomic_write_text(_results.RESULTS, text + section)


if __name__ == "__main__":
    main()
