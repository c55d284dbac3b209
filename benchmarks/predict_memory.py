"""Peak memory of ``softclass predict`` as the table grows: the table is read, predicted and
written a chunk of rows at a time (:class:`softclass.jobs.predict.PredictionStream`), so the peak
should stay flat as the rows grow.

    python -m benchmarks.predict_memory [ROWS ...]     (default: 1000000 5000000)

Each size runs ``predict M table.csv --output F`` for CSV, JSON, JSON lines and Parquet in a fresh
process; the peak RSS is the child's own (``wait4``), beside the same predict on the bundled
Iris (150 rows) measured in the same run. Appends rows to RESULTS.md ("predict peak memory").
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks._results import append_row, commit, machine
from softclass.data import bundled_path

SECTION = "## predict peak memory (issue 22)"
HEADER = (
    "| date | commit | machine | rows | input MB | format | output MB | wall s | peak RSS MiB "
    "| ÷ Iris predict |\n|---|---|---|---|---|---|---|---|---|---|"
)
FORMATS = ("csv", "json", "jsonl", "parquet")


def _run(args: list[str]) -> tuple[int, float, float]:
    """Exit code, wall seconds and the child's own peak RSS (MiB) of ``softclass ARGS``."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "softclass", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024


def _table(path: Path | str, rows: int) -> None:
    """Iris-shaped rows: the bundled rows repeated with a little noise."""
    iris = pl.read_csv(bundled_path("iris"))
    generator = np.random.default_rng(0)
    picks = generator.integers(0, iris.height, rows)
    table = iris[picks]
    numbers = [name for name, dtype in iris.schema.items() if dtype.is_numeric()]
    table = table.with_columns(
        (pl.col(name) + pl.Series(generator.normal(0, 0.05, rows)).round(3)).alias(name)
        for name in numbers
    )
    table.write_csv(path)


def main() -> None:
    sizes = [int(value) for value in sys.argv[1:]] or [1_000_000, 5_000_000]
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    iris = str(bundled_path("iris"))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = root / "model"
        assert _run(["train", iris, "--out", str(model), "--epochs", "2"])[0] == 0
        output = root / "out"
        code, _, reference = _run(["predict", str(model), iris, "--output", str(output)])
        assert code == 0
        print(f"Iris predict (150 rows): peak {reference:.0f} MiB; load {os.getloadavg()[0]:.1f}")
        for rows in sizes:
            table = root / f"rows_{rows}.csv"
            # In its own process: a child's peak RSS (wait4) starts from its parent's resident
            # size at the spawn (Linux counts the parent's memory up to exec), so the parent
            # must not hold the table.
            generate = (
                f"from benchmarks.predict_memory import _table; _table({str(table)!r}, {rows})"
            )
            subprocess.run([sys.executable, "-c", generate], check=True)
            input_mb = table.stat().st_size / 1e6
            for output_format in FORMATS:
                arguments = ["predict", str(model), str(table), "--format", output_format]
                code, seconds, peak = _run([*arguments, "--output", str(output)])
                output_mb = output.stat().st_size / 1e6 if code == 0 else float("nan")
                print(
                    f"{rows:>9,} rows {output_format:5s} exit {code}  {seconds:6.1f} s  "
                    f"peak {peak:6.0f} MiB ({peak / reference:.1f}x Iris)  "
                    f"output {output_mb:.0f} MB"
                )
                append_row(
                    SECTION,
                    HEADER,
                    f"| {stamp} | {commit()} | {machine()} | {rows:,} | {input_mb:.0f} | "
                    f"{output_format} | {output_mb:.0f} | {seconds:.1f} | {peak:.0f} | "
                    f"{peak / reference:.1f}× |",
                )
            table.unlink()


if __name__ == "__main__":
    main()
