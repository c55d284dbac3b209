"""CPU seconds of ``softclass compare`` for two source trees, runs interleaved (A/B).

Run from the repository root: ``python -m benchmarks.compare_cpu_ab OLD_SRC NEW_SRC [compare
options]``, e.g. ``git worktree add /tmp/old b7e9e34`` (with its C built in place) and
``python -m benchmarks.compare_cpu_ab /tmp/old/src src --seeds 10 --epochs 1000``. CPU is that of
the whole process tree: this process becomes a child subreaper (Linux), so the figure helpers a
helper forked are reaped and counted here. Prints each tree's (wall s, CPU s) per round, and the
load. On a loaded machine the CPU seconds are the figure to read; wall mostly measures the load.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def _tree_seconds(source: str, options: list[str], out: str) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "softclass", "compare", *options, "--out", out],
        env={**os.environ, "PYTHONPATH": source},
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    while True:  # the orphaned figure helpers, handed to this process
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return round(wall, 2), round(cpu, 2)


def main() -> None:
    old, new, *options = sys.argv[1:]
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    results: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(4):
            for name, source in (("old", old), ("new", new)):
                results[name].append(_tree_seconds(source, options, f"{directory}/out"))
    print(results, "load", os.getloadavg())


if __name__ == "__main__":
    main()
