"""How long report.html takes beside the training it reports, on the bundled Iris and 50 classes.

Run: ``python -m benchmarks.report``. Trains a comparison (no output directory), then times
:func:`softclass.jobs.report.write_report` on it, in CPU seconds of this process (the machine is
shared, so wall time mostly measures the neighbours) and wall seconds, and prints the report's
time as a ratio to the training's, measured in the same run. Appends a row to RESULTS.md.
"""

from __future__ import annotations

import tempfile
import time

import polars as pl
import torch

from benchmarks._results import append_row, commit, machine
from softclass.data import load_bundled
from softclass.data.prepare import prepare_table
from softclass.evaluation.report import RunContext
from softclass.jobs.compare import compare
from softclass.jobs.report import write_report
from softclass.training.config import TrainConfig

SECTION = "## report.html generation (python -m benchmarks.report)"
HEADER = (
    "| date | commit | machine | case | training CPU s | report CPU s | report / training | "
    "report wall s | page kB |\n|---|---|---|---|---|---|---|---|---|"
)


def _fifty_classes() -> pl.DataFrame:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(50).repeat_interleave(12)
    centres = torch.randn(50, 6, generator=generator) * 2
    features = centres[labels] + torch.randn(len(labels), 6, generator=generator)
    columns = {f"x{index}": features[:, index].numpy() for index in range(6)}
    return pl.DataFrame({**columns, "plant": [f"cultivar {v:02d}" for v in labels.tolist()]})


CASES = {
    "iris ABCD, 100 epochs (the default compare)": (
        lambda: prepare_table(load_bundled("iris")),
        TrainConfig(),
        (7,),
    ),
    "50 classes x 12 rows ABCD, 30 epochs adam, 64 hidden": (
        lambda: prepare_table(_fifty_classes(), validation_fraction=0.5),
        TrainConfig(epochs=30, optimizer="adam", learning_rate=0.01),
        (64,),
    ),
}


def main() -> None:
    torch.set_num_threads(1)
    for case, (make_data, config, hidden) in CASES.items():
        data = make_data()
        start = time.process_time()
        result = compare(data, "ABCD", config, hidden=hidden)
        training = time.process_time() - start
        with tempfile.TemporaryDirectory() as out:
            start, wall = time.process_time(), time.perf_counter()
            page = write_report(result, data, out, RunContext("benchmark", "python -m ..."))
            report, report_wall = time.process_time() - start, time.perf_counter() - wall
            size = page.stat().st_size / 1000
        ratio = report / training
        print(
            f"{case}: training {training:.2f} s CPU, report {report:.2f} s CPU "
            f"({ratio:.2f}x the training; {report_wall:.2f} s wall), page {size:.0f} kB"
        )
        append_row(
            SECTION,
            HEADER,
            f"| {time.strftime('%Y-%m-%d')} | {commit()} | {machine()} | {case} | "
            f"{training:.2f} | {report:.2f} | {ratio:.2f}x | {report_wall:.2f} | {size:.0f} |",
        )


if __name__ == "__main__":
    main()
