"""Start-up of the command line and of the training imports against ``python -c "import torch"``.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.startup [--repeats 7]``.

Each case is a fresh interpreter timed from launch to exit: wall clock, and CPU time (user +
system of the child: the work itself, without the time slices other jobs take on the shared
machine). The cases run in turn, ``--repeats`` times (a busy spell hits all of them alike), and
the median of each counts. Cases: ``import torch`` (the reference), ``softclass --help`` (goal
< 0.5 s; it does not import torch), the imports of ``softclass train`` / ``compare`` /
``predict``, the estimator's, and — for scale — ``import torch._dynamo``, which building a
``torch.optim`` optimizer costs and softclass no longer pays. Appends a row to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import resource
import statistics
import subprocess
import sys
import time

from benchmarks._results import append_row, commit, machine

CASES = {
    "import torch": ["-c", "import torch"],
    "softclass --help": ["-m", "softclass", "--help"],
    "train/compare/predict imports": [
        "-c",
        "import softclass.cli, softclass.jobs.train_predict, softclass.jobs.compare",
    ],
    "estimator import": ["-c", "from softclass import Classifier; Classifier"],
    "import torch._dynamo": ["-c", "import torch._dynamo"],
}

SECTION = (
    "## Start-up: fresh interpreters, median wall / CPU seconds (x import torch, wall) "
    "(benchmarks/startup.py)"
)
HEADER = (
    "| date | commit | machine | repeats | import torch | softclass --help | "
    "train/compare/predict imports | estimator import | import torch._dynamo |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def timed(arguments: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh interpreter running ``arguments``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved runs per case")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    arguments = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    for _ in range(arguments.repeats):
        for name, case in CASES.items():
            runs[name].append(timed(case))
    wall = {name: statistics.median(run[0] for run in values) for name, values in runs.items()}
    cpu = {name: statistics.median(run[1] for run in values) for name, values in runs.items()}
    print(f"machine: {machine()}")
    for name in CASES:
        print(
            f"{name:32s} wall {wall[name]:6.2f} s ({wall[name] / wall['import torch']:4.2f}x "
            f"import torch), CPU {cpu[name]:6.2f} s ({cpu[name] / cpu['import torch']:4.2f}x)"
        )
    if not arguments.no_record:
        append_row(
            SECTION,
            HEADER,
            f"| {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} | {commit()} | {machine()} "
            f"| {arguments.repeats} | "
            + " | ".join(
                f"{wall[name]:.2f} / {cpu[name]:.2f} s ({wall[name] / wall['import torch']:.2f}x)"
                for name in CASES
            )
            + " |",
        )


if __name__ == "__main__":
    main()
