"""A vs B at scale: does the agreement check tell rounding from a real difference?

Run from the repository root: ``python -m benchmarks.agreement_at_scale [--rows N --epochs E]``
(softclass importable, e.g. ``PYTHONPATH=src``). A synthetic table (``--rows`` rows, 20 features,
5 classes from a noisy linear teacher, 2,000 validation rows) is compared with designs A and B
under the table defaults (100 ReLU units, Adam lr 1e-3, batch 200, no early stopping). Many
float32 steps let the rounding of A's fused kernel and of B's log_softmax + NLL drift the weights
apart; the old check called any drift above 1e-3 "different". Prints and records the largest
weight drift, the old verdict, the float64 gradient difference at the same weights, the noise
floor of the same run and the verdict, with the seconds taken. Appends a row to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import time

import torch

from benchmarks._results import append_row, commit, machine
from softclass.data.prepare import PreparedData
from softclass.evaluation.agreement import FLOAT_TOLERANCE
from softclass.jobs.compare import compare
from softclass.jobs.defaults import TABLE
from softclass.training.config import TrainConfig

N_FEATURES, N_CLASSES, N_VALIDATION = 20, 5, 2_000
SECTION = (
    "## A vs B at scale: rounding against a real difference (benchmarks/agreement_at_scale.py)"
)
HEADER = (
    "| date | commit | machine | rows x epochs | max weight drift | old verdict | float64 gradient "
    "diff | noise floor | verdict | validation acc A / B | seconds |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def synthetic(rows: int, seed: int = 0) -> PreparedData:
    """float32 features (rows, 20), labels of a noisy random linear teacher, 5 classes."""
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(N_FEATURES, N_CLASSES, generator=generator)
    features = torch.randn(rows, N_FEATURES, generator=generator)
    noise = 0.5 * torch.randn(rows, N_CLASSES, generator=generator)
    validation = torch.randn(N_VALIDATION, N_FEATURES, generator=generator)
    return PreparedData(
        features,
        (features @ teacher + noise).argmax(dim=1),
        validation,
        (validation @ teacher).argmax(dim=1),
        tuple(f"class {index}" for index in range(N_CLASSES)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    options = {**TABLE.train_options(), "epochs": arguments.epochs, "patience": None}
    started = time.perf_counter()
    result = compare(
        synthetic(arguments.rows),
        "AB",
        TrainConfig(**options),
        hidden=TABLE.hidden,
        activation=TABLE.activation,
    )
    seconds = time.perf_counter() - started
    agreement = result.agreements[0]
    old_verdict = "different" if agreement.max_weight_diff > FLOAT_TOLERANCE else "equal"
    floor = "not needed" if agreement.noise_floor is None else f"{agreement.noise_floor:.2e}"
    accuracy = " / ".join(f"{result.summary(name)['validation_accuracy']:.4f}" for name in "AB")
    print(f"A vs B, {arguments.rows} rows x {arguments.epochs} epochs ({seconds:.0f} s)")
    print(f"  max float32 weight drift {agreement.max_weight_diff:.2e} (old check: {old_verdict})")
    print(f"  float64 gradient difference at the same weights {agreement.max_gradient_diff:.1e}")
    print(f"  noise floor {floor}; verdict: {agreement.verdict}")
    print(f"  {agreement.explanation()}")
    print(f"  validation accuracy A / B: {accuracy}")
    if not arguments.no_record:
        append_row(
            SECTION,
            HEADER,
            f"| {datetime.date.today()} | {commit()} | {machine()} | {arguments.rows} x "
            f"{arguments.epochs} | {agreement.max_weight_diff:.2e} | {old_verdict} | "
            f"{agreement.max_gradient_diff:.1e} | {floor} | {agreement.verdict} | {accuracy} | "
            f"{seconds:.0f} |",
        )


if __name__ == "__main__":
    main()
