"""Start-up of the command line and of the training imports against ``python -c "import torch"``.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.startup [--repeats 7]``.

Each case is a fresh interpreter timed from launch to exit (wall clock); the cases run in turn,
``--repeats`` times (a busy spell on the shared machine hits all of them alike), and the median of
each counts. Cases: ``import torch`` (the reference), ``softclass --help`` (goal < 0.5 s; it does
not import torch), the imports of ``softclass train`` / ``compare`` / ``predict``, the estimator's,
and — for scale — ``import torch._dynamo``, which building a ``torch.optim`` optimizer costs and
softclass no longer pays. Appends a row to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
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

SECTION = "## Start-up: fresh interpreters, median wall seconds (benchmarks/startup.py)"
HEADER = (
    "| date | commit | machine | repeats | import torch | softclass --help | "
    "train/compare/predict imports | estimator import | import torch._dynamo |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def timed(arguments: list[str]) -> float:
    """Wall seconds of one fresh interpreter running ``arguments``."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved runs per case")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    arguments = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(arguments.repeats):
        for name, case in CASES.items():
            times[name].append(timed(case))
    medians = {name: statistics.median(values) for name, values in times.items()}
    reference = medians["import torch"]
    print(f"machine: {machine()}")
    for name, seconds in medians.items():
        print(
            f"{name:32s} {seconds:6.2f} s  ({seconds / reference:4.2f}x import torch; "
            f"runs {min(times[name]):.2f}-{max(times[name]):.2f} s)"
        )
    if not arguments.no_record:
        append_row(
            SECTION,
            HEADER,
            f"| {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} | {commit()} | {machine()} "
            f"| {arguments.repeats} | "
            + " | ".join(
                f"{seconds:.2f} s ({seconds / reference:.2f}x)" for seconds in medians.values()
            )
            + " |",
        )


if __name__ == "__main__":
    main()
