"""The autograd Trainer's optimizers on the bundled Iris: wall time and whether ``torch._dynamo``
gets imported, in fresh interpreters.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.trainer_optimizers
[--repeats 3] [--baseline OTHER/src]``; with ``--baseline`` every case also runs with that source
tree (e.g. a checkout of main before this change) on ``PYTHONPATH``, interleaved with this tree's
runs, and the ratio this tree / baseline is printed (same run, same load). Wall and CPU time
(user + system of the child: its own work, without the slices other jobs take on a shared
machine) are both reported.

Building any ``torch.optim`` optimizer imports ``torch._dynamo`` (about 1.7 s of CPU); the Trainer
steps every optimizer of :mod:`softclass.mlp.optimizers` without one. Cases, each a fresh
interpreter timed from launch to exit, run in turn ``--repeats`` times (medians count):

* ``import torch`` — the reference;
* ``softclass train`` on Iris with ``--optimizer adamw`` (the batched engine), and with
  ``--precision bf16`` (the autograd Trainer) for adamw and sgd;
* ``fit`` (the Trainer, 100 epochs of the 4-7-3 network, ``backend="autograd"``, one thread as
  ``softclass train`` chooses for it) with sgd, sgd + Nesterov (no command-line flag exists for
  it), adam and adamw.

Each case runs once more under ``python -X importtime`` to see whether ``torch._dynamo`` is
imported. Appends a row per case to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._results import append_row, commit, machine
from softclass.data.bundled import bundled_path

IRIS = str(bundled_path("iris"))

# Trains the Iris network with the autograd Trainer: argv = optimizer, "nesterov" or "plain".
_FIT = """
import sys
import polars as pl, torch
from softclass.data.bundled import bundled_path
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLPConfig
from softclass.training.config import TrainConfig
from softclass.training.backends.autograd import fit
torch.set_num_threads(1)
table = pl.read_csv(bundled_path("iris"))
features = torch.tensor(table.drop("species").to_numpy(), dtype=torch.float32)
features = (features - features.mean(0)) / features.std(0)
names = sorted(set(table["species"].to_list()))
targets = torch.tensor([names.index(name) for name in table["species"].to_list()])
config = TrainConfig(optimizer=sys.argv[1], nesterov=sys.argv[2] == "nesterov", backend="autograd")
fit(get_design("A"), MLPConfig(4, 3, (7,)), features, targets, config=config)
"""

CASES: dict[str, list[str]] = {
    "import torch": ["-c", "import torch"],
    "train --optimizer adamw": ["-m", "softclass", "train", IRIS, "--optimizer", "adamw"],
    "train --optimizer adamw --precision bf16": [
        *["-m", "softclass", "train", IRIS, "--optimizer", "adamw", "--precision", "bf16"]
    ],
    "train --optimizer sgd --precision bf16": [
        *["-m", "softclass", "train", IRIS, "--optimizer", "sgd", "--precision", "bf16"]
    ],
    "fit sgd (Trainer)": ["-c", _FIT, "sgd", "plain"],
    "fit sgd nesterov (Trainer)": ["-c", _FIT, "sgd", "nesterov"],
    "fit adam (Trainer)": ["-c", _FIT, "adam", "plain"],
    "fit adamw (Trainer)": ["-c", _FIT, "adamw", "plain"],
}

SECTION = "## Trainer optimizers: start-up and Iris training (benchmarks/trainer_optimizers.py)"
HEADER = (
    "| date | commit | machine | repeats | case | wall / CPU s (median) | CPU x import torch | "
    "imports torch._dynamo | baseline wall / CPU s | baseline CPU x import torch | baseline "
    "imports torch._dynamo | this / baseline (wall, CPU) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _arguments(case: list[str], directory: str) -> list[str]:
    """The case's arguments, with a fresh ``--out`` for the ``train`` commands."""
    return [*case, "--out", f"{directory}/model"] if "train" in case else case


def _environment(source: str | None) -> dict[str, str] | None:
    """This process's environment, or it with ``source`` on PYTHONPATH (a baseline tree)."""
    return None if source is None else {**os.environ, "PYTHONPATH": source}


def timed(case: list[str], source: str | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh interpreter running ``case``."""
    with tempfile.TemporaryDirectory() as directory:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, *_arguments(case, directory)],
            check=True,
            capture_output=True,
            env=_environment(source),
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def imports_dynamo(case: list[str], source: str | None) -> bool:
    """Whether ``python -X importtime`` lists ``torch._dynamo`` for ``case``."""
    with tempfile.TemporaryDirectory() as directory:
        run = subprocess.run(
            [sys.executable, "-X", "importtime", *_arguments(case, directory)],
            check=True,
            capture_output=True,
            text=True,
            env=_environment(source),
        )
    return any(line.rstrip().endswith("| torch._dynamo") for line in run.stderr.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per case")
    parser.add_argument("--baseline", help="another source tree to run every case with too")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    arguments = parser.parse_args()
    trees: dict[str, str | None] = {"this": None}
    if arguments.baseline:
        trees["baseline"] = str(Path(arguments.baseline).resolve())
    runs = {(tree, name): [] for tree in trees for name in CASES}
    for _ in range(arguments.repeats):
        for name, case in CASES.items():
            for tree, source in trees.items():
                runs[tree, name].append(timed(case, source))
    wall = {key: statistics.median(run[0] for run in values) for key, values in runs.items()}
    cpu = {key: statistics.median(run[1] for run in values) for key, values in runs.items()}
    dynamo = {(tree, name): imports_dynamo(CASES[name], trees[tree]) for tree, name in runs}
    print(f"machine: {machine()}")
    stamp = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}"
    for name in CASES:
        cells = []
        for tree in trees:
            key = (tree, name)
            ratio = cpu[key] / cpu[tree, "import torch"]
            imported = "yes" if dynamo[key] else "no"
            print(
                f"{tree:8s} {name:42s} wall {wall[key]:6.2f} s, CPU {cpu[key]:6.2f} s "
                f"({ratio:4.2f}x import torch), torch._dynamo imported: {imported}"
            )
            cells += [f"{wall[key]:.2f} / {cpu[key]:.2f}", f"{ratio:.2f}x", imported]
        if "baseline" in trees:
            this, baseline = ("this", name), ("baseline", name)
            cells.append(f"{wall[this] / wall[baseline]:.2f}, {cpu[this] / cpu[baseline]:.2f}")
        else:
            cells += ["—"] * 4
        if not arguments.no_record:
            append_row(
                SECTION,
                HEADER,
                f"| {stamp} | {commit()} | {machine()} | {arguments.repeats} | `{name}` | "
                + " | ".join(cells)
                + " |",
            )


if __name__ == "__main__":
    main()
