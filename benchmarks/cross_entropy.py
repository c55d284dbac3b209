"""softclass vs torch cross entropy (and linear + cross entropy): time and peak extra memory.

Run from the repository root: ``python -m benchmarks.cross_entropy [--repeats N]``. Prints a
markdown table and appends it, with date, commit and machine, to benchmarks/RESULTS.md. The
measuring code lives in :mod:`softclass.jobs.bench` (also behind ``softclass bench``).
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
from pathlib import Path

from softclass.io import atomic_write_text
from softclass.jobs import bench

RESULTS = Path(__file__).with_name("RESULTS.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    arguments = parser.parse_args()
    results = bench.run_benchmarks(
        repeats=arguments.repeats,
        on_result=lambda result: print(f"done: {result.case.name}", flush=True),
    )
    table = bench.format_markdown(results)
    print(table)
    if arguments.no_record:
        return
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (
        f"\n## {stamp}, commit {commit or 'unknown'}\n\n"
        f"`python -m benchmarks.cross_entropy --repeats {arguments.repeats}` on "
        f"{bench.machine_description()}.\n\n{table}\n"
    )
    previous = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    atomic_write_text(RESULTS, previous + section)


if __name__ == "__main__":
    main()
