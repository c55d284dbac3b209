"""Reading and preparing a large mixed table: softclass against pandas + scikit-learn, same run.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.data_prepare``.

The script writes a table of ``--rows`` rows (default 1,000,000) × 30 columns (seed 0) as CSV
and as Parquet into a temporary directory: 20 plain numbers, 4 money strings (``$1,234.56``),
4 categories (3 to 12 levels), one date (``2021-03-15``) and a class column (5 classes); 2 % of
the cells of 5 number columns, 2 money columns and 2 category columns are missing.
Each case runs in its own subprocess and does read + type + fit + transform:

* softclass: the path ``softclass train TABLE.csv`` takes with today's defaults:
  ``prepare_file(path)`` (``read_table(path, raw=True)`` + ``prepare_table``, typing each
  column as it leaves the reader) with the table defaults of
  :data:`softclass.jobs.defaults.TABLE` (robust scaling, 8 quantile bins per number) and the
  default 20 % validation split (types every column once, fits the recipe on the training rows —
  imputation, scaling, bins, one-hot, date → year/month/weekday — and encodes float32 features
  and int64 targets of the training and validation rows);
* reference: ``pandas.read_csv`` / ``read_parquet``, money parsed with ``str.replace`` +
  ``astype(float)``, the date with ``to_datetime`` into the same three parts, then an sklearn
  ``ColumnTransformer`` (numbers: ``SimpleImputer(median)`` + ``StandardScaler``; categories:
  ``SimpleImputer(most_frequent)`` + ``OneHotEncoder``) ``fit_transform`` and a ``LabelEncoder``
  on the class column.

Reported per case: the fastest of ``--repeats`` runs (seconds; also its CPU seconds, user +
system of every thread, which a loaded machine inflates less than the wall time), the peak
memory the case added to its process (the high-water resident size of its own memory, ``VmHWM``,
minus the resident size after imports; ``ru_maxrss``, printed beside it, is at least the parent's
peak when the child is started by ``vfork`` + ``exec``, as ``subprocess`` does) divided
by the in-memory
(Arrow) size of the typed table (polars ``estimated_size``), and the same peak less the
features the case returns (what preparing needs beyond its result; with 8 bins softclass returns
compact features and each binned number's float64 value, the bins being made where the rows are
used: :mod:`softclass.data.expansion`). Printed ratios: peak / table per format and
pandas + sklearn time / softclass time. Goals (issue 21): peak ≤ 3× the table for Parquet and
CSV, CSV ≥ 2× faster than the reference. ``--bins 0 --normalization zscore`` measures the
recipe the goal was first set on. ``--phases`` also runs softclass's case once more per format
with the resident size sampled every 2 ms and prints where the memory sits, phase by phase
(:data:`PHASES`). Appends a row to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._results import append_row, commit, machine

SECTION = "## Data preparation: 1,000,000 x 30 mixed table, read + type + fit + transform"
HEADER = (
    "| date | commit | machine | rows | format | softclass s | pandas+sklearn s | speed-up | "
    "softclass peak / table | pandas peak / table |\n|---|---|---|---|---|---|---|---|---|---|"
)
N_NUMBERS, N_MONEY, N_CATEGORIES = 20, 4, 4
MISSING_SHARE = 0.02
WITH_MISSING = ("x0", "x5", "x10", "x15", "x19", "money0", "money1", "cat0", "cat2")


def make_table(n_rows: int, seed: int = 0):
    """The benchmark table as a polars DataFrame (money and date as text, as in a CSV)."""
    import polars as pl

    generator = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for index in range(N_NUMBERS):
        columns[f"x{index}"] = np.round(generator.normal(index, 1 + index, n_rows), 3)
    for index in range(N_MONEY):
        cents = generator.integers(0, 10_000_000, n_rows).tolist()
        columns[f"money{index}"] = [f"${cent // 100:,}.{cent % 100:02d}" for cent in cents]
    for index in range(N_CATEGORIES):
        levels = np.array([f"level{level}" for level in range(3 + 3 * index)])
        columns[f"cat{index}"] = levels[generator.integers(0, len(levels), n_rows)]
    days = np.datetime64("2019-01-01") + generator.integers(0, 3 * 365, n_rows)
    columns["day"] = np.datetime_as_string(days, unit="D")
    columns["label"] = np.array(["a", "b", "c", "d", "e"])[generator.integers(0, 5, n_rows)]
    table = pl.DataFrame(columns)
    holes = {name: pl.Series(generator.random(n_rows) < MISSING_SHARE) for name in WITH_MISSING}
    return table.with_columns(
        pl.when(~holes[name]).then(pl.col(name)).alias(name) for name in WITH_MISSING
    )


def _peak_bytes() -> tuple[int, int]:
    """(the high-water resident size of this process's memory, ``ru_maxrss``), in bytes.

    Linux's ``ru_maxrss`` keeps the resident size of the memory an ``exec`` replaced: a child
    started with ``vfork`` (``subprocess``) inherits the parent's peak (here the parent that made
    the table). ``VmHWM`` in /proc/self/status is the peak of this process's own memory.
    """
    rusage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, rusage
    except OSError:
        pass
    return rusage, rusage


def _resident_bytes() -> int:
    """Resident set size of this process now (Linux /proc), in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def run_softclass(path: Path, options: dict) -> list[np.ndarray]:
    """``softclass train``'s preparation: read raw, type, split, fit on training rows, encode."""
    from softclass.data.expansion import FeatureRows
    from softclass.data.prepare import prepare_file

    prepared = prepare_file(path, "label", seed=0, **options)
    arrays = []
    for features in (prepared.train_features, prepared.validation_features):
        if isinstance(features, FeatureRows):  # with bins: compact features and binned values
            arrays.extend((features.compact.numpy(), features.raw.numpy()))
        elif features is not None:
            arrays.append(features.numpy())
    return arrays


def run_pandas(path: Path, options: dict) -> list[np.ndarray]:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler

    frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    for index in range(N_MONEY):
        name = f"money{index}"
        frame[name] = frame[name].str.replace(r"[$,]", "", regex=True).astype(float)
    day = pd.to_datetime(frame.pop("day"), format="%Y-%m-%d")
    frame["day_year"], frame["day_month"], frame["day_weekday"] = (
        day.dt.year,
        day.dt.month,
        day.dt.weekday,
    )
    labels = LabelEncoder().fit_transform(frame.pop("label"))
    numeric = [name for name in frame.columns if not name.startswith("cat")]
    categorical = [name for name in frame.columns if name.startswith("cat")]
    numbers = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    categories = make_pipeline(
        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
    )
    transformer = ColumnTransformer(
        [("scale", numbers, numeric), ("onehot", categories, categorical)], sparse_threshold=0
    )
    features = transformer.fit_transform(frame).astype(np.float32, copy=False)
    return [features, labels]


CASES = {"softclass": run_softclass, "pandas": run_pandas}
PHASES = (  # (module, function, phase) wrapped by --phases, in the order preparation runs them
    ("softclass.data.prepare", "read_raw", "read"),
    ("softclass.data.prepare", "_split_before_typing", "split from the target, rows as read"),
    ("softclass.data.prepare", "typed_table", "typing"),
    ("softclass.data.prepare", "_rows_to_split", "rows to split (usual order)"),
    ("softclass.data.reading.RawTable", "rows", "validation rows as read"),
    ("softclass.data.recipe.Recipe", "fit", "fit"),
    ("softclass.data.prepare", "_binned_first", "binned values"),
    ("softclass.data.prepare", "encoded_rows", "compact rows"),
)


def phase_peaks(path: Path, options: dict) -> list[tuple[str, float, float]]:
    """Run softclass's case once with the resident size sampled every 2 ms from a thread:
    (phase, MiB when it starts, most MiB until the next phase starts), MiB over the resident
    size after imports; the last row is the result returned."""
    import importlib
    import threading

    child_imports()
    baseline = _resident_bytes()
    rows: list[list] = [["start", 0.0, 0.0]]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            rows[-1][2] = max(rows[-1][2], (_resident_bytes() - baseline) / 2**20)

    def marked(function, phase: str):
        def wrapper(*arguments, **keywords):
            if rows[-1][0] != phase:
                now = (_resident_bytes() - baseline) / 2**20
                rows.append([phase, now, now])
            return function(*arguments, **keywords)

        return wrapper

    for module, name, phase in PHASES:
        owner_name, _, attribute = module.rpartition(".")
        try:
            owner = importlib.import_module(module)
        except ModuleNotFoundError:  # a class: its module, then the class
            owner = getattr(importlib.import_module(owner_name), attribute)
        if hasattr(owner, name):
            function = getattr(owner, name)
            wrapped = marked(getattr(function, "__func__", function), phase)
            setattr(owner, name, classmethod(wrapped) if hasattr(function, "__func__") else wrapped)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    result = run_softclass(path, options)
    marked(lambda: None, "result returned")()
    done.set()
    thread.join()
    del result
    return [tuple(row) for row in rows[1:]]


def child_imports() -> None:
    """The imports every case makes before its baseline (not part of the measured memory)."""
    import pandas  # noqa: F401
    import polars  # noqa: F401
    import sklearn.compose  # noqa: F401
    import torch  # noqa: F401

    import softclass.jobs.compare  # noqa: F401


def child(case: str, path: Path, options: dict) -> None:
    """Run one case in this (fresh) process and print its time and peak extra memory as JSON."""
    if case == "phases":
        print(json.dumps(phase_peaks(path, options)))
        return
    child_imports()
    baseline = _resident_bytes()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = CASES[case](path, options)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak, rusage = _peak_bytes()
    features = sum(array.nbytes for array in result if array.dtype.kind == "f")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "peak_extra": max(peak - baseline, 0),
                "peak_extra_rusage": max(rusage - baseline, 0),
                "features": features,
            }
        )
    )


def measure(case: str, path: Path, repeats: int, options: dict) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.data_prepare",
                "--child",
                case,
                str(path),
                json.dumps(options),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return {
        "seconds": min(run["seconds"] for run in runs),
        "cpu": min(run["cpu"] for run in runs),
        "peak_extra": min(run["peak_extra"] for run in runs),
        "peak_extra_rusage": min(run["peak_extra_rusage"] for run in runs),
        "features": runs[0]["features"],
    }


def _arguments() -> argparse.Namespace:
    from softclass.jobs.defaults import TABLE
    from softclass.training.config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the fastest counts")
    parser.add_argument("--formats", default="parquet,csv", help="comma-separated formats")
    parser.add_argument("--bins", type=int, default=TABLE.bins)
    parser.add_argument("--normalization", default=TABLE.normalization)
    parser.add_argument("--validation", type=float, default=TrainConfig().validation_fraction)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument(
        "--phases", action="store_true", help="also print softclass's memory per phase"
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("CASE", "PATH", "OPTIONS"), help=argparse.SUPPRESS
    )
    return parser.parse_args()


def _line(file_format: str, ours: dict, reference: dict, table_bytes: int) -> str:
    speedup = reference["seconds"] / ours["seconds"]
    return (
        f"{file_format:8s} softclass {ours['seconds']:.2f} s, peak "
        f"{ours['peak_extra'] / table_bytes:.2f}x table ("
        f"{(ours['peak_extra'] - ours['features']) / table_bytes:.2f}x beyond its "
        f"{ours['features'] / 2**20:.0f} MiB of features; by ru_maxrss "
        f"{ours['peak_extra_rusage'] / table_bytes:.2f}x); pandas+sklearn "
        f"{reference['seconds']:.2f} s, peak {reference['peak_extra'] / table_bytes:.2f}x "
        f"table: pandas+sklearn / softclass time {speedup:.2f}x (CPU {ours['cpu']:.2f} s vs "
        f"{reference['cpu']:.2f} s: {reference['cpu'] / ours['cpu']:.2f}x)"
    )


def _print_phases(path: Path, options: dict, table_bytes: int) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.data_prepare",
            "--child",
            "phases",
            str(path),
            json.dumps(options),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    allowed = 3 * table_bytes / 2**20
    print(f"         memory per phase (MiB over imports; 3x the table = {allowed:.0f}):")
    for phase, start, most in json.loads(completed.stdout.strip().splitlines()[-1]):
        print(f"           {phase:38s} from {start:5.0f}, at most {most:5.0f}")


def main() -> None:
    arguments = _arguments()
    if arguments.child:
        case, path, options = arguments.child
        child(case, Path(path), json.loads(options))
        return

    from softclass.data import read_table

    options = {
        "normalization": arguments.normalization,
        "bins": arguments.bins,
        "validation_fraction": arguments.validation,
    }
    print(f"load average {os.getloadavg()[0]:.1f}; softclass options {options}")
    with tempfile.TemporaryDirectory() as folder:
        table = make_table(arguments.rows)
        paths = {"parquet": Path(folder) / "table.parquet", "csv": Path(folder) / "table.csv"}
        table.write_parquet(paths["parquet"])
        table.write_csv(paths["csv"])
        del table
        table_bytes = read_table(paths["parquet"]).estimated_size()
        print(
            f"{arguments.rows:,} x 30: typed table {table_bytes / 2**20:.0f} MiB, CSV "
            f"{paths['csv'].stat().st_size / 2**20:.0f} MiB, Parquet "
            f"{paths['parquet'].stat().st_size / 2**20:.0f} MiB"
        )
        for file_format in arguments.formats.split(","):
            path = paths[file_format]
            ours = measure("softclass", path, arguments.repeats, options)
            reference = measure("pandas", path, arguments.repeats, options)
            print(_line(file_format, ours, reference, table_bytes), flush=True)
            if arguments.phases:
                _print_phases(path, options, table_bytes)
            print(f"         load average {os.getloadavg()[0]:.1f}", flush=True)
            if not arguments.no_record:
                append_row(
                    SECTION,
                    HEADER,
                    f"| {datetime.date.today()} | {commit()} | {machine()} | {arguments.rows:,} | "
                    f"{file_format} | {ours['seconds']:.2f} | {reference['seconds']:.2f} | "
                    f"{reference['seconds'] / ours['seconds']:.2f}x | "
                    f"{ours['peak_extra'] / table_bytes:.1f}x | "
                    f"{reference['peak_extra'] / table_bytes:.1f}x |",
                )


if __name__ == "__main__":
    main()
