"""Streamed training under a memory bound, 1 against N torchrun ranks (issue 25): wall time,
peak RSS of the largest rank, and the run's closing numbers (the same for every rank count in
``--sync data``).

    python -m benchmarks.scale_ranks [--rows 4000000] [--memory 1GB 12GB] [--ranks 1 2]
                                     [--repeats 2] [--sync data] [--cache DIR]

Each job is a fresh ``torchrun --standalone --nproc-per-node R -m softclass train TABLE --epochs 1
--memory M`` (``benchmarks.scale``'s table, cached under ``--cache``); the rank counts take turns
(1, 2, 2, 1, ... for two repeats) so a change of the machine's load falls on both. Prints a
markdown table with the load average before each job and the closing numbers (training loss /
validation loss / accuracy); nothing is written to RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

from benchmarks.scale_train import _table, _train, run_child

_NUMBERS = re.compile(r"training loss ([\d.]+).*?validation loss ([\d.]+), accuracy ([\d.]+)")


def turns(ranks: list[int], repeats: int) -> list[int]:
    """The rank counts in the order they run: forwards, then backwards, and so on."""
    order: list[int] = []
    for repeat in range(repeats):
        order += ranks if repeat % 2 == 0 else ranks[::-1]
    return order


def measure(table: Path, memory: str, ranks: int, sync: str, scratch: Path) -> dict:
    """One job: wall seconds, peak MiB of the largest process, the closing numbers."""
    load = os.getloadavg()[0]
    extra = ["--memory", memory, "--sync", sync]
    code, seconds, peak, last = run_child(_train(table, scratch / "model", extra, ranks))
    found = _NUMBERS.search(last)
    numbers = "/".join(found.groups()) if found and code == 0 else f"failed, exit {code}"
    return {"load": load, "seconds": seconds, "peak": peak, "numbers": numbers}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_ranks", description=__doc__)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--memory", nargs="+", default=["1GB"])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sync", default="data")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "softclass-scale"
    )
    options = parser.parse_args(argv)
    table, arrow_bytes = _table(options.cache, options.rows)
    print(f"{table}: {options.rows:,} rows, {arrow_bytes / 1e6:,.0f} MB Arrow", flush=True)
    print("| --memory | ranks | load before | wall s | peak RSS MiB (largest rank) | numbers |")
    print("|---|---|---|---|---|---|", flush=True)
    for memory in options.memory:
        for ranks in turns(options.ranks, options.repeats):
            with tempfile.TemporaryDirectory(dir=options.cache) as scratch:
                row = measure(table, memory, ranks, options.sync, Path(scratch))
            print(
                f"| {memory} | {ranks} | {row['load']:.1f} | {row['seconds']:.1f} | "
                f"{row['peak']:,.0f} | {row['numbers']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
