"""Time of ``softclass compare`` on the bundled Iris against ``python -c "import torch"``, same run.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.compare_time``. Measures,
best of ``--repeats`` (the machine may be shared; the best run is the least disturbed one), each
case in a fresh process and on a *cold* and a *warm* start:

* cold: the files of torch, numpy, polars, pyarrow, matplotlib and softclass are dropped from
  the page cache first (``posix_fadvise(DONTNEED)``: as far as an unprivileged process can —
  pages other running processes map stay), matplotlib's font cache is a fresh, empty
  ``MPLCONFIGDIR`` (the first run after an install builds it), ``--out`` is new;
* warm: the same command again, caches as the earlier runs left them, ``--out`` new.

Cases: ``python -c "import torch"`` (the reference, cold and warm); ``softclass compare`` (4
designs, 100 epochs, report and plots written; goal ≤ 2x the reference of the same start);
``softclass compare --seeds 10 --epochs 1000`` (goal ≤ the reference + 5 s); and the training
alone in this process (``softclass.compare`` writing nothing). Prints the ratios with the
machine's load and appends one row to ``benchmarks/results/compare_time_cold_warm.csv``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from benchmarks._results import commit, machine
from softclass.io import atomic_write_text

RESULTS_PATH = Path(__file__).parent / "results" / "compare_time_cold_warm.csv"


PACKAGES = ("torch", "numpy", "polars", "pyarrow", "matplotlib", "PIL", "softclass")
SEEDS10 = ["--seeds", "10", "--epochs", "1000"]


CPU_SECONDS: dict[str, list[float]] = {}  # per case, the CPU seconds of each run (see below)


def _process_seconds(arguments: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of a fresh process running ``arguments``; its CPU seconds (user + system,
    with the figure helpers it reaped) are appended to ``CPU_SECONDS`` under the command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, *arguments],
        check=True,
        capture_output=True,
        env=dict(os.environ) if env is None else env,
    )
    wall = time.perf_counter() - started
    _reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    command = arguments[: arguments.index("--out")] if "--out" in arguments else arguments
    CPU_SECONDS.setdefault(" ".join(command), []).append(cpu)
    return wall


def _become_subreaper() -> None:
    """Linux: the figure helpers a helper forked (see evaluation/figure_pool.py) become this
    process's children when their parent ends, so their CPU seconds are counted too."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap_orphans() -> None:
    """Wait for every orphan handed to this process (they end once their pipes close)."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _drop_page_cache() -> int:
    """Ask the kernel to drop the cached pages of :data:`PACKAGES`' files; returns how many
    files were advised (pages mapped by running processes stay cached)."""
    import importlib.util

    advised = 0
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            for path in Path(location).rglob("*"):
                if not path.is_file():
                    continue
                try:
                    descriptor = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
                    advised += 1
                finally:
                    os.close(descriptor)
    return advised


def _cold(arguments: list[str], directory: str, tag: str) -> float:
    """``arguments`` in a fresh process after :func:`_drop_page_cache`, with an empty
    matplotlib configuration directory (no font cache)."""
    config = Path(directory) / f"mpl-{tag}"
    config.mkdir()
    _drop_page_cache()
    return _process_seconds(arguments, {**os.environ, "MPLCONFIGDIR": str(config)})


def _training_seconds(seeds: int, epochs: int) -> float:
    """In this process: ``softclass.compare`` without writing anything, i.e. the batched
    training of every design x seed with the per-epoch agreement and the final measurements."""
    import torch

    from softclass.data import load_bundled
    from softclass.data.prepare import prepare_table
    from softclass.jobs.compare import compare
    from softclass.training.config import TrainConfig

    torch.set_num_threads(1)  # what the command line chooses for Iris
    data = prepare_table(load_bundled("iris"))
    started = time.perf_counter()
    compare(data, "ABCD", TrainConfig(epochs=epochs), seeds=seeds)
    return time.perf_counter() - started


def _one_round(directory: str, repeat: int) -> dict[str, float]:
    """Every case once, cold then warm (the warm runs follow their cold one)."""
    compare = ["-m", "softclass", "compare"]
    seconds = {}
    for start in ("cold", "warm"):
        run = (
            (lambda arguments, tag: _cold(arguments, directory, f"{tag}{repeat}"))
            if start == "cold"
            else (lambda arguments, tag: _process_seconds(arguments))
        )
        seconds[f"import_torch_{start}"] = run(["-c", "import torch"], "t")
        seconds[f"compare_{start}"] = run(
            [*compare, "--out", f"{directory}/c-{start}{repeat}"], "c"
        )
        seconds[f"seeds10_{start}"] = run(
            [*compare, *SEEDS10, "--out", f"{directory}/s-{start}{repeat}"], "s"
        )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()
    _become_subreaper()
    rounds, loads = [], []
    with tempfile.TemporaryDirectory() as directory:
        for repeat in range(arguments.repeats):
            loads.append(os.getloadavg()[0])
            rounds.append(_one_round(directory, repeat))
    figures = {name: min(run[name] for run in rounds) for name in rounds[0]}
    figures["training"] = min(_training_seconds(1, 100) for _ in range(arguments.repeats))
    row = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        **{f"{name}_s": round(value, 3) for name, value in figures.items()},
    }
    for start in ("cold", "warm"):
        reference = figures[f"import_torch_{start}"]
        ratio = figures[f"compare_{start}"] / reference
        excess = figures[f"seeds10_{start}"] - reference
        row[f"compare_over_import_torch_{start}"] = round(ratio, 2)
        row[f"seeds10_minus_import_torch_{start}"] = round(excess, 2)
        print(f"{start}: python -c 'import torch'             {reference:6.2f} s (reference)")
        print(
            f"{start}: softclass compare (Iris, 4x100)      {figures[f'compare_{start}']:6.2f} s "
            f"= {ratio:.2f}x import torch (goal ≤ 2x)"
        )
        print(
            f"{start}: compare --seeds 10 --epochs 1000     {figures[f'seeds10_{start}']:6.2f} s "
            f"= import torch + {excess:.2f} s (goal ≤ + 5 s)"
        )
    print(f"training alone (compare, no files)         {figures['training']:6.3f} s")
    for case, seconds in CPU_SECONDS.items():
        print(f"CPU (user + system, median of cold and warm runs) {case}: {median(seconds):.2f} s")
    print(
        f"machine: {machine()}; best of {arguments.repeats}; "
        f"1-min load at each round's start: {', '.join(f'{load:.1f}' for load in loads)}"
    )
    existing = RESULTS_PATH.read_text() if RESULTS_PATH.exists() else ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(row))
    if not existing:
        writer.writeheader()
    writer.writerow(row)
    atomic_write_text(RESULTS_PATH, existing + buffer.getvalue())


if __name__ == "__main__":
    main()
