"""Issue 22's many-classes case, run by ``python -m benchmarks.hostile_files classes``.

``softclass train`` (one epoch) on a CSV of 100,000 rows × 2 numbers whose last column holds K
classes (``c{i mod K}``), each run a fresh process reporting its wall time and peak RSS, for
K = 5,000, 10,000 and 50,000; with ``--before SRC`` the same runs import softclass from SRC
first (an older tree, its extensions built in place) — except where that tree's training table
alone would pass 8 GB (``(N, F + C)`` float32), which is printed as not run. Then
``stratified_split`` at 50,000 classes in 100,000 rows (best of 3) for the version of the
split at the commit the issue was filed against, SRC's and this tree's. ``--only train|fit|split``
runs one part, ``--classes K1,K2`` other class counts.

Appends one row per measurement to RESULTS.md ("Issue 22: index targets (s6-targets)").
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks._results import append_row, commit, machine

SECTION = "## Issue 22: index targets (s6-targets)"
HEADER = (
    "| date | commit | machine | load | case | code | exit | wall s | peak RSS MiB |\n"
    "|---|---|---|---|---|---|---|---|---|"
)
N_ROWS = 100_000
CLASS_COUNTS = (5_000, 10_000, 50_000)
# The split as it was when issue 22 was filed (one boolean scan of the targets per class).
FILED_SPLIT = "7dbd0e3^"
_TIMED_SPLIT = """
import sys, time, torch
namespace = {}
exec(sys.stdin.read(), namespace)
split = namespace["stratified_split"]
targets = torch.arange(100_000) % 50_000
targets = targets[torch.randperm(100_000, generator=torch.Generator().manual_seed(0))]
best = float("inf")
for _ in range(3):
    started = time.perf_counter()
    split(targets, 0.2, 0)
    best = min(best, time.perf_counter() - started)
    if best > 2.0:
        break
print(best)
"""


_FIT = """
import resource, sys, time
import numpy as np
import softclass
n_rows, n_classes = int(sys.argv[1]), int(sys.argv[2])
features = np.random.default_rng(0).standard_normal((n_rows, 2)).astype(np.float32)
labels = np.array([f"c{index % n_classes}" for index in range(n_rows)])
started = time.perf_counter()
softclass.Classifier(max_iter=1, random_state=0).fit(features, labels)
print(time.perf_counter() - started)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def _fit(n_classes: int, python_path: str) -> tuple[float, float]:
    """Wall seconds of the fit and the process's peak RSS (MiB)."""
    done = subprocess.run(
        [sys.executable, "-c", _FIT, str(N_ROWS), str(n_classes)],
        capture_output=True, text=True, check=True, timeout=900,
        env={**os.environ, "PYTHONPATH": python_path},
    )  # fmt: skip
    seconds, peak = done.stdout.strip().splitlines()[-2:]
    return float(seconds), float(peak)


def _table(path: Path, n_classes: int) -> None:
    generator = np.random.default_rng(0)
    numbers = generator.standard_normal((N_ROWS, 2)).astype(np.float32)
    with path.open("w") as out:
        out.write("x0,x1,label\n")
        out.writelines(
            f"{a:.5f},{b:.5f},c{index % n_classes}\n"
            for index, (a, b) in enumerate(numbers.tolist())
        )


def _before_table_bytes(n_classes: int) -> int:
    """The one-hot training table of the older engine: 80% of the rows × (F + C) float32."""
    return int(0.8 * N_ROWS) * (2 + n_classes) * 4


def _split_seconds(source_text: str, python_path: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _TIMED_SPLIT],
        input=source_text,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": python_path},
    )
    return float(done.stdout.strip().splitlines()[-1])


def many_classes(
    before: str | None,
    run: Callable[..., tuple[int, float, float, str]],
    only: str = "",
    class_counts: tuple[int, ...] = CLASS_COUNTS,
) -> None:
    """Run the cases (``run`` is hostile_files' measured ``softclass`` process); ``only``: one
    of "train", "fit", "split" or "" for all."""
    here = str(Path(__file__).resolve().parents[1] / "src")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    trees = ([("before", before)] if before else []) + [("this tree", here)]

    def record(case: str, code: str, outcome: str) -> None:
        load = f"{os.getloadavg()[0]:.1f}"
        print(f"{case:48s} {code:10s} {outcome}  (load {load})")
        append_row(
            SECTION, HEADER, f"| {stamp} | {commit()} | {machine()} | {load} | {case} | {code} | "
            f"{outcome} |"
        )  # fmt: skip

    if only in ("", "train"):
        _train_cases(trees, run, record, class_counts)
    if only in ("", "fit"):
        for n_classes in class_counts:
            case = f"Classifier(max_iter=1).fit, {N_ROWS:,} rows, {n_classes:,} classes"
            for code, source in trees:
                if code == "before" and _before_table_bytes(n_classes) > 8 * 10**9:
                    size = _before_table_bytes(n_classes) / 1e9
                    record(case, code, f"not run ({size:.0f} GB table) | | ")
                    continue
                seconds, peak = _fit(n_classes, source)
                record(case, code, f"0 | {seconds:.1f} | {peak:.0f}")
    if only in ("", "split"):
        _split_cases(trees, here, record)


def _train_cases(trees, run, record, class_counts) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        for n_classes in class_counts:
            table = Path(scratch) / f"classes_{n_classes}.csv"
            _table(table, n_classes)
            case = f"train, {N_ROWS:,} rows, {n_classes:,} classes, 1 epoch"
            for code, source in trees:
                if code == "before" and _before_table_bytes(n_classes) > 8 * 10**9:
                    size = _before_table_bytes(n_classes) / 1e9
                    record(case, code, f"not run ({size:.0f} GB table) | | ")
                    continue
                out = Path(scratch) / f"model_{n_classes}_{code.replace(' ', '_')}"
                exit_code, seconds, peak, stderr = run(
                    "train", str(table), "--out", str(out), "--epochs", "1",
                    "--max-classes", str(n_classes), source=source,
                )  # fmt: skip
                if exit_code != 0:
                    print(f"    {stderr[-200:]}")
                record(case, code, f"{exit_code} | {seconds:.1f} | {peak:.0f}")


def _split_cases(trees, here, record) -> None:
    repository = Path(__file__).resolve().parents[1]
    filed = subprocess.run(
        ["git", "show", f"{FILED_SPLIT}:src/softclass/data/split.py"],
        cwd=repository, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    versions = [(f"filed ({FILED_SPLIT})", filed, here)] + [
        (code, (Path(source) / "softclass/data/split.py").read_text(), source)
        for code, source in trees
    ]
    for code, text, python_path in versions:
        seconds = _split_seconds(text, python_path)
        record("stratified_split, 50,000 classes in 100,000 rows", code, f"| {seconds:.3f} | ")
