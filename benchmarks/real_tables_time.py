"""Issue 19 part 3: default training on a 5,000 × 20 mixed table against HistGradientBoosting.

Run from the repository root: ``python -m benchmarks.real_tables_time`` (softclass importable,
e.g. ``PYTHONPATH=src``). A seeded table of ``--rows`` rows (default 5,000) with 14 numeric
columns (some skewed, 5 % missing cells) and 6 text columns (3 to 12 levels), and a 3-class
label that depends on both, is written to a CSV file. Then, ``--repeats`` times each (median
kept), on one thread:

- ``softclass train FILE --out M --target label --missing impute`` with default settings, called
  in-process (``softclass.cli.main``; reading, typing, the recipe, training, the saved model and
  report, everything a user waits for once torch is imported);
- ``HistGradientBoostingClassifier()`` fitted on the same rows read with pandas (categories
  ordinal-encoded and declared categorical): the fit alone, as users time it.

Prints both and the ratio (goal ≤ 5); ``--record`` appends it to benchmarks/RESULTS.md with the
machine load.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.real_tables import _cli, baseline_models, read_features  # noqa: E402

SECTION = "## Default training time on a 5,000 × 20 mixed table (benchmarks/real_tables_time.py)"
HEADER = (
    "| date | commit | machine | rows | softclass train s | HGB fit s | ratio (goal ≤ 5) |\n"
    "|---|---|---|---|---|---|---|"
)
GOAL = 5.0


def mixed_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """14 numeric and 6 text columns, 5 % of numeric cells missing; the label mixes both."""
    generator = np.random.default_rng(seed)
    numbers = generator.normal(size=(rows, 14))
    numbers[:, :4] = np.exp(numbers[:, :4])  # skewed columns
    texts = [generator.integers(0, levels, size=rows) for levels in (3, 4, 5, 6, 8, 12)]
    score = numbers[:, 4] + 0.5 * np.log(numbers[:, 0]) + (texts[0] == 1) - 0.7 * (texts[3] > 2)
    score += 0.3 * generator.normal(size=rows)
    label = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    frame = pd.DataFrame(numbers, columns=[f"x{i}" for i in range(14)])
    frame = frame.mask(generator.random(frame.shape) < 0.05)
    for i, codes in enumerate(texts):
        frame[f"c{i}"] = np.array([f"level{code}" for code in codes])
    frame["label"] = np.array(["low", "mid", "high"])[label]
    return frame


def time_softclass(path: Path, work: Path, run: int) -> float:
    start = time.perf_counter()
    _cli(["train", str(path), "--out", str(work / f"model{run}"), "--target", "label",
          "--missing", "impute"])  # fmt: skip
    return time.perf_counter() - start


def time_hgb(path: Path) -> float:
    features, labels = read_features(path, "label")
    categorical = [features[name].dtype == object for name in features.columns]
    levels = [features[name].nunique() for name in features.columns]
    model = baseline_models(0, categorical, levels)["HGB"]
    start = time.perf_counter()
    model.fit(features, labels)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="append to RESULTS.md")
    arguments = parser.parse_args(argv)
    from benchmarks._results import append_row, commit, machine

    with tempfile.TemporaryDirectory(prefix="real_tables_time-") as directory:
        work = Path(directory)
        path = work / "mixed.csv"
        mixed_table(arguments.rows).to_csv(path, index=False)
        time_softclass(path, work, -1)  # warm-up: the compiled trainer's first load
        softclass, hgb = [], []
        for run in range(arguments.repeats):
            softclass.append(time_softclass(path, work, run))
            hgb.append(time_hgb(path))
    mine, theirs = statistics.median(softclass), statistics.median(hgb)
    ratio = mine / theirs
    verdict = "met" if ratio <= GOAL else "missed"
    print(f"softclass train (default): {mine:.2f} s (runs {[round(s, 2) for s in softclass]})")
    print(f"HistGradientBoosting fit:  {theirs:.2f} s (runs {[round(s, 2) for s in hgb]})")
    print(f"ratio {ratio:.2f} (goal ≤ {GOAL:g}: {verdict}); {machine()}")
    if arguments.record:
        row = (
            f"| {datetime.date.today()} | {commit()} | {machine()} | {arguments.rows} | "
            f"{mine:.2f} | {theirs:.2f} | {ratio:.2f} |"
        )
        append_row(SECTION, HEADER, row)


if __name__ == "__main__":
    main()
