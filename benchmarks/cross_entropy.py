"""softclass vs torch cross entropy (and linear + cross entropy): time and peak extra memory.

Run from the repository root: ``python -m benchmarks.cross_entropy [--repeats N]``. Prints two
markdown tables and appends them, with date, commit, machine and load, to benchmarks/RESULTS.md:
the large cases with peak memory (measuring code in :mod:`softclass.jobs.bench`, also behind
``softclass bench``), and the shapes clients run on 1 and 2 threads against torch eager (and
``--compile``: torch.compile) and the machine's floor (:mod:`benchmarks.cross_entropy_clients`).
``--table`` picks one of them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
from pathlib import Path

from benchmarks import cross_entropy_clients
from softclass.io import atomic_write_text
from softclass.jobs import bench

RESULTS = Path(__file__).with_name("RESULTS.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--table", choices=["all", "large", "clients"], default="all")
    parser.add_argument("--compile", action="store_true", help="clients table: torch.compile too")
    arguments = parser.parse_args()
    tables = []
    if arguments.table in ("all", "large"):
        results = bench.run_benchmarks(
            repeats=arguments.repeats,
            on_result=lambda result: print(f"done: {result.case.name}", flush=True),
        )
        tables.append(bench.format_markdown(results))
    if arguments.table in ("all", "clients"):
        tables.append(cross_entropy_clients.run([1, 2], arguments.repeats, arguments.compile))
    table = "\n".join(tables)
    print(table)
    if arguments.no_record:
        return
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (
        f"\n## {stamp}, commit {commit or 'unknown'}\n\n"
        f"`python -m benchmarks.cross_entropy --repeats {arguments.repeats} --table "
        f"{arguments.table}{' --compile' if arguments.compile else ''}` on "
        f"{bench.machine_description()}; load before: {os.getloadavg()[0]:.1f}.\n\n{table}\n"
    )
    previous = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    atomic_write_text(RESULTS, previous + section)


if __name__ == "__main__":
    main()
