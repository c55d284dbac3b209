"""Reading and preparing a large mixed table: softclass against pandas + scikit-learn, same run.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.data_prepare``.

The script writes a table of ``--rows`` rows (default 1,000,000) × 30 columns (seed 0) as CSV
and as Parquet into a temporary directory: 20 plain numbers, 4 money strings (``$1,234.56``),
4 categories (3 to 12 levels), one date (``2021-03-15``) and a class column (5 classes).
Each case runs in its own subprocess and does read + type + fit + transform:

* softclass: ``read_table(path, raw=True)`` then ``prepare_table(table, validation_fraction=0)``
  (types every column once, fits the recipe — z-score, one-hot, date → year/month/weekday —
  and encodes float32 features and int64 targets);
* reference: ``pandas.read_csv`` / ``read_parquet``, money parsed with ``str.replace`` +
  ``astype(float)``, the date with ``to_datetime`` into the same three parts, then an sklearn
  ``ColumnTransformer`` (``StandardScaler`` + ``OneHotEncoder``) ``fit_transform`` and a
  ``LabelEncoder`` on the class column.

Reported per case: the fastest of ``--repeats`` runs (seconds), the peak memory the case added to
its process (``ru_maxrss`` minus the resident size after imports) and that peak divided by the
in-memory size of the typed table (polars ``estimated_size``); the ratio is pandas + sklearn time
over softclass time. Goals (issue 12): Parquet ≤ 2 s, CSV ≤ 4 s, peak ≤ 3× the table, ≥ 2× faster
than the reference. Appends a row to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
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
    return pl.DataFrame(columns)


def _resident_bytes() -> int:
    """Resident set size of this process now (Linux /proc), in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def run_softclass(path: Path) -> tuple[object, object]:
    from softclass.data import read_table
    from softclass.data.prepare import prepare_table

    table = read_table(path, raw=True)
    prepared = prepare_table(table, "label", validation_fraction=0)
    return prepared.train_features, prepared.train_targets


def run_pandas(path: Path) -> tuple[object, object]:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
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
    transformer = ColumnTransformer(
        [("scale", StandardScaler(), numeric), ("onehot", OneHotEncoder(), categorical)],
        sparse_threshold=0,
    )
    return transformer.fit_transform(frame), labels


CASES = {"softclass": run_softclass, "pandas": run_pandas}


def child(case: str, path: Path) -> None:
    """Run one case in this (fresh) process and print its time and peak extra memory as JSON."""
    import pandas  # noqa: F401  (imports are not part of the measured memory)
    import polars  # noqa: F401
    import sklearn.compose  # noqa: F401
    import torch  # noqa: F401

    import softclass.jobs.compare  # noqa: F401

    baseline = _resident_bytes()
    start = time.perf_counter()
    CASES[case](path)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_extra": max(peak - baseline, 0)}))


def measure(case: str, path: Path, repeats: int) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.data_prepare", "--child", case, str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return {
        "seconds": min(run["seconds"] for run in runs),
        "peak_extra": min(run["peak_extra"] for run in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the fastest counts")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child[0], Path(arguments.child[1]))
        return

    from softclass.data import read_table

    with tempfile.TemporaryDirectory() as folder:
        table = make_table(arguments.rows)
        paths = {"parquet": Path(folder) / "table.parquet", "csv": Path(folder) / "table.csv"}
        table.write_parquet(paths["parquet"])
        table.write_csv(paths["csv"])
        table_bytes = read_table(paths["parquet"]).estimated_size()
        print(
            f"{arguments.rows:,} x {table.width}: typed table {table_bytes / 2**20:.0f} MiB, CSV "
            f"{paths['csv'].stat().st_size / 2**20:.0f} MiB, Parquet "
            f"{paths['parquet'].stat().st_size / 2**20:.0f} MiB"
        )
        for file_format, path in paths.items():
            ours = measure("softclass", path, arguments.repeats)
            reference = measure("pandas", path, arguments.repeats)
            speedup = reference["seconds"] / ours["seconds"]
            print(
                f"{file_format:8s} softclass {ours['seconds']:.2f} s (peak "
                f"{ours['peak_extra'] / table_bytes:.1f}x table), pandas+sklearn "
                f"{reference['seconds']:.2f} s (peak "
                f"{reference['peak_extra'] / table_bytes:.1f}x table): {speedup:.2f}x faster"
            )
            if not arguments.no_record:
                append_row(
                    SECTION,
                    HEADER,
                    f"| {datetime.date.today()} | {commit()} | {machine()} | {arguments.rows:,} | "
                    f"{file_format} | {ours['seconds']:.2f} | {reference['seconds']:.2f} | "
                    f"{speedup:.2f}x | {ours['peak_extra'] / table_bytes:.1f}x | "
                    f"{reference['peak_extra'] / table_bytes:.1f}x |",
                )


if __name__ == "__main__":
    main()
