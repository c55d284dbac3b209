"""Tables larger than memory (issue 25), the training rows: ``softclass train`` (one epoch) and
torchrun with 1 and 2 ranks, wall time and peak RSS against the table's Arrow size.

    python -m benchmarks.scale_train [--rows 1000000 4000000 10000000] [--ranks-rows 4000000]
                                     [--cache DIR] [--no-record]

``benchmarks/scale.py`` calls :func:`rows` for its training rows when this module exists; run
alone, this module makes the same synthetic table (``benchmarks.scale``'s generator when that
module exists, else :func:`generate`: 20 numbers, categories of 10/40/100 levels, a date and 10
classes, 100,000-row row groups) under ``--cache``.

Jobs (each a fresh process; peak RSS from ``os.wait4``, for torchrun the largest rank's):

* ``train``: ``softclass train TABLE --epochs 1`` with the default ``--memory`` (half of the
  machine's memory: the in-memory path below it, streamed above);
* ``train streamed``: the same at 1M rows forced to stream (``--memory 1GB``), beside the
  in-memory row, to show which path is faster on a table that fits;
* ``torchrun N``: ``torchrun --nproc-per-node N -m softclass train ... --memory 1GB``
  (streamed, so each rank reads only its own row groups) at ``--ranks-rows``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SECTION = "## scale: training tables larger than memory (issue 25)"
HEADER = (
    "| date | commit | machine | job | rows | Arrow MB | wall s | peak RSS MiB | ÷ table |\n"
    "|---|---|---|---|---|---|---|---|---|"
)
_ROW_GROUP_ROWS = 100_000
_LEVELS = (10, 40, 100)


def generate(path: Path, n_rows: int, seed: int = 0) -> int:
    """The synthetic table at ``path`` (Parquet, written a row group at a time); its Arrow bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pa_parquet

    weights = np.random.default_rng(seed).normal(size=(20 + sum(_LEVELS), 10))
    arrow_bytes, writer = 0, None
    for start in range(0, n_rows, _ROW_GROUP_ROWS):
        rng = np.random.default_rng([seed, start])
        rows = min(_ROW_GROUP_ROWS, n_rows - start)
        numbers = rng.normal(size=(rows, 20))
        codes = [rng.integers(0, levels, rows) for levels in _LEVELS]
        offsets = np.cumsum([20, *_LEVELS[:-1]])
        score = numbers @ weights[:20] + sum(
            weights[offset + code] for offset, code in zip(offsets, codes, strict=True)
        )
        columns = {f"x{index}": numbers[:, index] for index in range(20)}
        for levels, code in zip(_LEVELS, codes, strict=True):
            columns[f"cat{levels}"] = np.array([f"c{levels}_{level}" for level in range(levels)])[
                code
            ]
        columns["day"] = np.datetime64("2015-01-01") + rng.integers(0, 3650, rows).astype(
            "timedelta64[D]"
        )
        label = (score + rng.gumbel(size=score.shape) * 2).argmax(axis=1)
        columns["label"] = np.array([f"class{number}" for number in range(10)])[label]
        chunk = pa.table(columns)
        arrow_bytes += chunk.nbytes
        writer = writer or pa_parquet.ParquetWriter(str(path), chunk.schema)
        writer.write_table(chunk)
    writer.close()
    return arrow_bytes


def _table(cache: Path, n_rows: int) -> tuple[Path, int]:
    """scale.py's cached table when that module exists, else this module's (cached too)."""
    try:
        from benchmarks.scale import cached_table
    except ImportError:
        cache.mkdir(parents=True, exist_ok=True)
        for stem in (f"mixed_{n_rows}", f"train_{n_rows}"):  # scale.py's table when cached
            path, sidecar = cache / f"{stem}.parquet", cache / f"{stem}.json"
            if sidecar.is_file():
                return path, json.loads(sidecar.read_text())["arrow_bytes"]
        sidecar.write_text(json.dumps({"arrow_bytes": generate(path, n_rows)}))
        return path, json.loads(sidecar.read_text())["arrow_bytes"]
    return cached_table(cache, n_rows)


def run_child(arguments: list[str]) -> tuple[int, float, float, str]:
    """Exit code, wall seconds, peak RSS (MiB, the largest process) and the last stdout line."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    last = output.strip().splitlines()[-1] if output.strip() else ""
    code = os.waitstatus_to_exitcode(status)
    return code, time.perf_counter() - started, usage.ru_maxrss / 1024, last


def _train(table: Path, out: Path, extra: list[str], ranks: int = 0) -> list[str]:
    train = ["-m", "softclass", "train", str(table), "--out", str(out), "--epochs", "1"]
    train += ["--overwrite", *extra]
    if not ranks:
        return train
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    return [*launch, *train]


def rows(table: Path, n_rows: int, arrow_bytes: int, scratch: Path, ranks_rows: int = 4_000_000):
    """``[(job, wall seconds, peak MiB), ...]`` of the training jobs on ``table``."""
    jobs = [("train", [], 0)]
    if n_rows <= 1_000_000:
        jobs.append(("train streamed (--memory 1GB)", ["--memory", "1GB"], 0))
    if n_rows == ranks_rows:
        jobs += [(f"torchrun {ranks}", ["--memory", "1GB"], ranks) for ranks in (1, 2)]
    measured = []
    for job, extra, ranks in jobs:
        code, seconds, peak, last = run_child(_train(table, scratch / "model", extra, ranks))
        path = "streamed" if "streamed" in last else "in memory" if "in memory" in last else "?"
        name = f"{job} [{path}]" if code == 0 else f"{job} (failed, exit {code})"
        print(f"{name}: {n_rows} rows {seconds:.1f} s {peak:.0f} MiB", flush=True)
        measured.append((name, seconds, peak))
    return measured


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_train", description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000, 10_000_000])
    parser.add_argument("--ranks-rows", type=int, default=4_000_000)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "softclass-scale"
    )
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    options = parser.parse_args(argv)
    from benchmarks._results import append_row, commit, machine

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    for n_rows in options.rows:
        table, arrow_bytes = _table(options.cache, n_rows)
        with tempfile.TemporaryDirectory(dir=options.cache) as scratch:
            measured = rows(table, n_rows, arrow_bytes, Path(scratch), options.ranks_rows)
        for job, seconds, peak in measured:
            ratio = peak * 2**20 / arrow_bytes
            row = (
                f"| {stamp} | {commit()} | {machine()} | {job} | "
                f"{n_rows:,} | {arrow_bytes / 1e6:,.0f} | {seconds:.1f} | {peak:,.0f} | "
                f"{ratio:.1f}× |"
            )
            print(row, flush=True)
            if not options.no_record:
                append_row(SECTION, HEADER, row)


if __name__ == "__main__":
    main()
