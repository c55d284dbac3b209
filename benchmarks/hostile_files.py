"""Issue 14's hostile model files, each run as a fresh ``softclass`` process: exit code, wall time
and peak memory against a good ``softclass predict`` of the same model measured in the same run.

    python -m benchmarks.hostile_files

Appends one row per case to RESULTS.md ("Hostile model files"); the last column is the in-process
time of the load call alone (``load_model`` / ``load_checkpoint_file``) until it raises. Before
the schema checks these cases took 23 s (``hidden: [1e30]``), >60 s (200,000 layers), 26.6 s and
6.6 GB (``[200000000]``), 53 s and 2.6 GB (a 2.1 MB checkpoint inflating to 2 GiB).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from benchmarks._results import append_row, commit, machine
from softclass.data import bundled_path
from softclass.errors import ModelFileError
from softclass.jobs.store import load_model
from softclass.training.schema import load_checkpoint_file

SECTION = "## Hostile model files (issue 14)"
HEADER = (
    "| date | commit | machine | case | exit | wall s | ÷ good predict | peak RSS MiB "
    "| load call s |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def _run(*args: str) -> tuple[int, float, float, str]:
    """Exit code, wall seconds, peak RSS (MiB) and stderr of ``softclass ARGS`` in a new process."""
    command = [sys.executable, "-c", _MEASURED, *args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ)
    seconds = time.perf_counter() - started
    peak = float(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else float("nan")
    return done.returncode, seconds, peak, done.stderr.strip()


# Runs the CLI and prints its own peak RSS on exit, whatever the exit code.
_MEASURED = """
import atexit, resource, sys
atexit.register(lambda: print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
sys.argv = ["softclass", *sys.argv[1:]]
from softclass.cli import main
main()
"""


def _edit(directory: Path, hidden: list) -> Path:
    path = directory / "model.json"
    metadata = json.loads(path.read_text())
    metadata["model_config"]["hidden"] = hidden
    path.write_text(json.dumps(metadata))
    return directory


def main() -> None:
    iris = str(bundled_path("iris"))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        good = root / "good"
        code, *_ = _run("train", iris, "--out", str(good), "--epochs", "2")
        assert code == 0, "training the reference model failed"
        cases: dict[str, list[str]] = {"good predict (reference)": ["predict", str(good), iris]}
        loads = {"good predict (reference)": lambda: load_model(good)}
        for name, hidden in (
            ("hidden [1e30]", [1e30]),
            ("200,000 hidden layers", [1] * 200_000),
            ("hidden [200000000]", [200_000_000]),
        ):
            directory = root / name.replace(" ", "_").replace(",", "")
            shutil.copytree(good, directory)
            cases[f"predict, {name}"] = ["predict", str(_edit(directory, hidden)), iris]
            loads[f"predict, {name}"] = lambda directory=directory: load_model(directory)
        for name, make in (
            ("--resume, /etc/passwd as checkpoint", _passwd),
            ("--resume, 2 GiB deflated checkpoint", _bomb),
        ):
            directory = root / name.split(", ")[1].replace(" ", "_").replace("/", "_")
            directory.mkdir()
            make(directory / "checkpoint.pt")
            cases[name] = ["train", iris, "--out", str(directory), "--resume", "--epochs", "2"]
            loads[name] = lambda path=directory / "checkpoint.pt": load_checkpoint_file(path)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        reference = None
        for name, args in cases.items():
            code, seconds, peak, stderr = _run(*args)
            reference = seconds if reference is None else reference
            load_seconds = _time_load(loads[name])
            print(
                f"{name:40s} exit {code}  {seconds:6.2f} s  ({seconds / reference:4.2f}x)  "
                f"{peak:7.0f} MiB  load call {load_seconds:.3f} s  {stderr[-150:]}"
            )
            append_row(
                SECTION,
                HEADER,
                f"| {stamp} | {commit()} | {machine()} | {name} | {code} | {seconds:.2f} | "
                f"{seconds / reference:.2f}× | {peak:.0f} | {load_seconds:.3f} |",
            )


def _time_load(load: Callable[[], object]) -> float:
    """Seconds for the in-process load call to return or raise ModelFileError."""
    started = time.perf_counter()
    try:
        load()
    except ModelFileError:
        pass
    return time.perf_counter() - started


def _passwd(path: Path) -> None:
    path.write_bytes(
        Path("/etc/passwd").read_bytes()
        if Path("/etc/passwd").exists()
        else b"root:x:0:0::/root:/bin/sh\n"
    )


def _bomb(path: Path) -> None:
    """A checkpoint-named zip whose one entry inflates to 2 GiB (about 2 MB on disk)."""
    block = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as entry:
            for _ in range(2048):
                entry.write(block)


if __name__ == "__main__":
    main()
