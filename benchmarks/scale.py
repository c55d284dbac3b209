"""Tables larger than memory (issue 25): wall time and peak memory of ``softclass predict`` on a
synthetic mixed table as it grows, beside two scikit-learn references on the same machine.

    python -m benchmarks.scale [--rows 1000000 4000000 10000000] [--jobs predict sgd hgb]
                               [--cache DIR] [--no-record]

The table (cached under ``--cache``, default ``$TMPDIR/softclass-scale``; generated once per
size, a chunk of 250,000 rows at a time, so the generator's own memory is bounded): 20 numbers,
3 categories of 10/40/100 levels, a date and a class of 10 levels that depends on them, as a
Parquet file of 100,000-row row groups. Its "Arrow size" is the in-memory size of the table as
Arrow arrays (summed over the generated chunks); ``÷ table`` is the peak RSS over it.

Each job runs in a fresh process; its peak RSS is that process's own (``os.wait4``):

* ``predict``: ``softclass predict MODEL TABLE --output out.csv`` (and ``--output out.parquet``)
  with a model trained for one epoch on a 20,000-row sample of the same table, beside the same
  predict on that sample (the process's constant: imports, model, one chunk);
* ``sgd``: ``SGDClassifier.partial_fit`` over the row groups (one-hot categories), one pass;
* ``hgb``: ``HistGradientBoostingClassifier(max_iter=20)`` on the whole table read into memory.

Training rows (``softclass train``, torchrun) come from ``benchmarks/scale_train.py`` when that
module exists: its ``rows(table, n_rows, arrow_bytes, scratch)`` returns
``[(job, wall seconds, peak MiB), ...]``, printed and recorded the same way.
Rows are appended to RESULTS.md ("scale: tables larger than memory") with the machine's load.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SECTION = "## scale: tables larger than memory (issue 25)"
HEADER = (
    "| date | commit | machine | job | rows | Arrow MB | wall s | peak RSS MiB | ÷ table |\n"
    "|---|---|---|---|---|---|---|---|---|"
)
CHUNK_ROWS = 250_000
ROW_GROUP_ROWS = 100_000
LEVELS = (10, 40, 100)
N_NUMBERS = 20
N_CLASSES = 10
TARGET = "label"


def generate(path: Path, rows: int, seed: int = 0) -> int:
    """Write the synthetic table of ``rows`` rows to ``path`` (Parquet); return its Arrow size
    in bytes. Memory: one chunk of :data:`CHUNK_ROWS` rows at a time."""
    import pyarrow.parquet as pa_parquet

    weights = np.random.default_rng(seed).normal(size=(N_NUMBERS + sum(LEVELS), N_CLASSES))
    arrow_bytes = 0
    temporary = path.with_name(path.name + ".partial")
    writer = None
    try:
        for index, start in enumerate(range(0, rows, CHUNK_ROWS)):
            chunk = _chunk(min(CHUNK_ROWS, rows - start), weights, seed * 1_000_003 + index)
            arrow_bytes += chunk.nbytes
            if writer is None:
                writer = pa_parquet.ParquetWriter(str(temporary), chunk.schema)
            writer.write_table(chunk, row_group_size=ROW_GROUP_ROWS)
    finally:
        if writer is not None:
            writer.close()
    temporary.replace(path)
    return arrow_bytes


def _chunk(rows: int, weights: np.ndarray, seed: int):
    """One chunk of the table as an Arrow table (the class: argmax of a linear score + noise)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    numbers = rng.normal(size=(rows, N_NUMBERS))
    codes = [rng.integers(0, levels, rows) for levels in LEVELS]
    score = numbers @ weights[:N_NUMBERS]
    offset = N_NUMBERS
    for levels, picked in zip(LEVELS, codes, strict=True):
        score += weights[offset + picked]
        offset += levels
    score += rng.gumbel(size=score.shape) * 2.0
    days = rng.integers(0, 3650, rows)
    columns = {f"x{position}": numbers[:, position] for position in range(N_NUMBERS)}
    for levels, picked in zip(LEVELS, codes, strict=True):
        names = np.array([f"c{levels}_{level}" for level in range(levels)])
        columns[f"cat{levels}"] = pa.array(names[picked])
    columns["day"] = pa.array(np.datetime64("2015-01-01") + days.astype("timedelta64[D]"))
    labels = np.array([f"class{number}" for number in range(N_CLASSES)])
    columns[TARGET] = pa.array(labels[score.argmax(axis=1)])
    return pa.table(columns)


def cached_table(cache: Path, rows: int) -> tuple[Path, int]:
    """The table of ``rows`` rows under ``cache`` (generated when missing) and its Arrow size."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"mixed_{rows}.parquet"
    sidecar = cache / f"mixed_{rows}.json"
    if not (path.is_file() and sidecar.is_file()):
        started = time.perf_counter()
        # In a child: a child's peak RSS (wait4) starts from its parent's resident size at the
        # spawn (Linux counts it up to exec), so this process stays small.
        script = (
            "import json, pathlib; from benchmarks.scale import generate; "
            f"size = generate(pathlib.Path({str(path)!r}), {rows}); "
            f"pathlib.Path({str(sidecar)!r}).write_text(json.dumps("
            f"{{'rows': {rows}, 'arrow_bytes': size}}))"
        )
        subprocess.run([sys.executable, "-c", script], check=True)
        print(f"generated {path} in {time.perf_counter() - started:.1f} s", flush=True)
    return path, json.loads(sidecar.read_text())["arrow_bytes"]


def run_child(arguments: list[str]) -> tuple[int, float, float]:
    """Exit code, wall seconds and the child's own peak RSS (MiB) of ``python ARGS``."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *arguments], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - started, usage.ru_maxrss / 1024


def _model(cache: Path, table: Path) -> Path:
    """A model trained for one epoch on the first 20,000 rows of ``table`` (cached)."""
    import polars as pl

    model = cache / "model"
    if not (model / "model.json").is_file():
        sample = cache / "sample.parquet"
        pl.scan_parquet(table).head(20_000).collect().write_parquet(sample)
        arguments = ["-m", "softclass", "train", str(sample), "--out", str(model)]
        code, _, _ = run_child([*arguments, "--epochs", "1", "--target", TARGET, "--overwrite"])
        if code != 0:
            raise SystemExit(f"training the benchmark's model failed (exit {code})")
    return model


def _predict_rows(cache: Path, table: Path, scratch: Path) -> list[tuple[str, float, float]]:
    model = _model(cache, table)
    rows = []
    reference = ["-m", "softclass", "predict", str(model), str(cache / "sample.parquet")]
    output = scratch / "reference.csv"
    code, seconds, peak = run_child([*reference, "--output", str(output), "--quiet"])
    if code != 0:
        raise SystemExit(f"softclass predict on the sample failed (exit {code})")
    rows.append(("softclass predict (20,000-row sample)", seconds, peak))
    for suffix in ("csv", "parquet"):
        output = scratch / f"predictions.{suffix}"
        arguments = ["-m", "softclass", "predict", str(model), str(table), "--output", str(output)]
        code, seconds, peak = run_child([*arguments, "--quiet"])
        if code != 0:
            raise SystemExit(f"softclass predict failed (exit {code})")
        output.unlink()
        rows.append((f"softclass predict → {suffix}", seconds, peak))
    return rows


def _sklearn_row(job: str, table: Path) -> list[tuple[str, float, float]]:
    code, seconds, peak = run_child(["-m", "benchmarks.scale", "--child", job, str(table)])
    if code != 0:
        raise SystemExit(f"{job} failed (exit {code})")
    name = {"sgd": "SGDClassifier.partial_fit (row groups)", "hgb": "HistGradientBoosting(20)"}
    return [(name[job], seconds, peak)]


def _encoded(frame) -> tuple[np.ndarray, np.ndarray]:
    """Numbers, one-hot categories and the date (days) of a polars chunk; class indices."""
    parts = [frame.select(f"x{position}" for position in range(N_NUMBERS)).to_numpy()]
    for levels in LEVELS:
        codes = frame[f"cat{levels}"].str.split("_").list.get(1).cast(int).to_numpy()
        parts.append(np.eye(levels, dtype=np.float64)[codes])
    parts.append((frame["day"].dt.epoch("d").to_numpy()[:, None] - 3650 / 2) / 1000)
    targets = frame[TARGET].str.strip_prefix("class").cast(int).to_numpy()
    return np.hstack(parts), targets


def _child(job: str, table: Path) -> None:
    """The scikit-learn reference jobs, run in their own process."""
    import polars as pl
    import pyarrow.parquet as pa_parquet

    if job == "sgd":
        from sklearn.linear_model import SGDClassifier

        model = SGDClassifier(random_state=0)
        parquet = pa_parquet.ParquetFile(table)
        for group in range(parquet.num_row_groups):
            features, targets = _encoded(pl.from_arrow(parquet.read_row_group(group)))
            model.partial_fit(features, targets, classes=np.arange(N_CLASSES))
        return
    from sklearn.ensemble import HistGradientBoostingClassifier

    frame = pl.read_parquet(table)
    features = frame.select(
        *(f"x{position}" for position in range(N_NUMBERS)),
        *(pl.col(f"cat{levels}").cast(pl.Categorical).to_physical() for levels in LEVELS),
        pl.col("day").dt.epoch("d"),
    ).to_numpy()
    targets = frame[TARGET].str.strip_prefix("class").cast(int).to_numpy()
    del frame
    categorical = [N_NUMBERS + position for position in range(len(LEVELS))]
    HistGradientBoostingClassifier(
        max_iter=20, categorical_features=categorical, random_state=0
    ).fit(features, targets)


def _training_rows(table: Path, rows: int, arrow_bytes: int, scratch: Path) -> list:
    """``benchmarks/scale_train.py``'s rows when that module exists (the training jobs)."""
    if importlib.util.find_spec("benchmarks.scale_train") is None:
        return []
    from benchmarks import scale_train

    return list(scale_train.rows(table, rows, arrow_bytes, scratch))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000, 10_000_000])
    parser.add_argument("--jobs", nargs="+", default=["predict", "sgd", "hgb", "train"])
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "softclass-scale"
    )
    parser.add_argument("--no-record", action="store_true", help="Do not append to RESULTS.md.")
    parser.add_argument("--child", nargs=2, metavar=("JOB", "TABLE"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        _child(options.child[0], Path(options.child[1]))
        return
    from benchmarks._results import append_row, commit, machine

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    for rows in options.rows:
        table, arrow_bytes = cached_table(options.cache, rows)
        arrow_mib = arrow_bytes / 2**20
        with tempfile.TemporaryDirectory(dir=options.cache) as scratch:
            measured = []
            if "predict" in options.jobs:
                measured += _predict_rows(options.cache, table, Path(scratch))
            for job in ("sgd", "hgb"):
                if job in options.jobs:
                    measured += _sklearn_row(job, table)
            if "train" in options.jobs:
                measured += _training_rows(table, rows, arrow_bytes, Path(scratch))
        for job, seconds, peak in measured:
            load = os.getloadavg()[0]
            print(
                f"{job:42s} {rows:>11,} rows  {seconds:7.1f} s  peak {peak:7.0f} MiB  "
                f"{peak / arrow_mib:5.2f}× the table ({arrow_mib:.0f} MiB)  load {load:.1f}",
                flush=True,
            )
            if not options.no_record:
                append_row(
                    SECTION,
                    HEADER,
                    f"| {stamp} | {commit()} | {machine()} | {job} | {rows:,} | "
                    f"{arrow_bytes / 1e6:.0f} | {seconds:.1f} | {peak:.0f} | "
                    f"{peak / arrow_mib:.2f}× |",
                )


if __name__ == "__main__":
    main()
