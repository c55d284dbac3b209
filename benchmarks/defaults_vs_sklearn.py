"""Do softclass's defaults on a user's table compete with scikit-learn? Accuracy and log loss.

Run from the repository root: ``python -m benchmarks.defaults_vs_sklearn`` (softclass importable,
e.g. ``PYTHONPATH=src``). For each of scikit-learn's bundled wine, breast cancer and digits
tables (offline) and each split seed (``--splits``, default 5: seeds 0, 1, ...), the table goes
through :func:`softclass.jobs.compare.prepare_table` exactly as ``softclass compare TABLE`` does
(stratified 80/20 split, z-score recipe fitted on the training rows), then on the same rows:

- softclass: design A with the table defaults of :mod:`softclass.jobs.defaults` (100 ReLU units,
  Adam lr 1e-3, batch 200, at most 200 epochs, early stopping with patience 10 on a tenth of the
  training rows held out from the validation rows), trained by :func:`softclass.jobs.compare`;
- ``MLPClassifier``, ``LogisticRegression(max_iter=1000)`` and
  ``HistGradientBoostingClassifier``, scikit-learn's defaults otherwise, fitted on all training
  rows.

Prints validation accuracy and log loss of each (split 0, and the mean over the splits) and the
goal: softclass's accuracy within 0.5 % of the best of the three, and its log loss no worse than
MLPClassifier's. Every library runs on one thread. Appends the means to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import time
import warnings

import numpy as np
import polars as pl
import torch

from benchmarks._results import append_row, commit, machine
from softclass.data.prepare import prepare_table
from softclass.jobs.compare import compare
from softclass.jobs.defaults import TABLE, Defaults
from softclass.training.config import TrainConfig

TABLES = ("wine", "breast_cancer", "digits")
MODELS = ("softclass", "MLPClassifier", "LogisticRegression", "HistGradientBoosting")
ACCURACY_MARGIN = 0.005  # the goal: within 0.5 % accuracy of the best scikit-learn model
SECTION = "## Defaults on a user's table against scikit-learn (benchmarks/defaults_vs_sklearn.py)"
HEADER = (
    "| date | commit | machine | splits | table | softclass acc / log loss | MLPClassifier | "
    "LogisticRegression | HistGradientBoosting | goal acc | goal log loss |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def load_table(name: str) -> pl.DataFrame:
    """One of scikit-learn's bundled tables, with the class as a string column ``target``."""
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    return pl.from_pandas(bunch.frame).with_columns(pl.col("target").cast(pl.Utf8))


def scikit_learn_models(seed: int) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    return {
        "MLPClassifier": MLPClassifier(random_state=seed),
        "LogisticRegression": LogisticRegression(max_iter=1000),
        "HistGradientBoosting": HistGradientBoostingClassifier(random_state=seed),
    }


def measure(name: str, seed: int, defaults: Defaults = TABLE) -> dict[str, tuple[float, float]]:
    """Per model, (validation accuracy, validation log loss) on one split of one table."""
    from sklearn.metrics import log_loss

    data = prepare_table(load_table(name), "target", seed=seed)
    config = TrainConfig(**defaults.train_options(), seed=seed, device="cpu")
    result = compare(
        data,
        "A",
        config,
        hidden=defaults.hidden,
        activation=defaults.activation,
        stopping_fraction=defaults.stopping_fraction,
    )
    run = result.runs[0]
    numbers = {
        "softclass": (run.metrics["validation_accuracy"], run.metrics["validation_log_loss"])
    }
    train_x, train_y = data.train_features.numpy(), data.train_targets.numpy()
    validation_x, validation_y = data.validation_features.numpy(), data.validation_targets.numpy()
    for label, model in scikit_learn_models(seed).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLPClassifier: "maximum iterations reached"
            model.fit(train_x, train_y)
        probabilities = model.predict_proba(validation_x)
        accuracy = float((probabilities.argmax(axis=1) == validation_y).mean())
        loss = float(log_loss(validation_y, probabilities, labels=range(data.n_classes)))
        numbers[label] = (accuracy, loss)
    return numbers


def goals(numbers: dict[str, tuple[float, float]]) -> tuple[bool, bool]:
    """(softclass within ACCURACY_MARGIN of the best other accuracy, log loss ≤ MLPClassifier's)."""
    best = max(numbers[label][0] for label in MODELS[1:])
    accuracy, loss = numbers["softclass"]
    return accuracy >= best - ACCURACY_MARGIN, loss <= numbers["MLPClassifier"][1]


def _met(goal: bool) -> str:
    return "met" if goal else "missed"


def _cell(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.4f} / {pair[1]:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=5, help="split seeds 0, 1, ... to average")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    for name in TABLES:
        started = time.perf_counter()
        per_split = [measure(name, seed) for seed in range(arguments.splits)]
        mean = {
            label: tuple(float(np.mean([split[label][i] for split in per_split])) for i in (0, 1))
            for label in MODELS
        }
        print(f"\n{name}: validation accuracy / log loss ({time.perf_counter() - started:.0f} s)")
        print(f"  {'model':<22}{'split 0':>20}{f'mean of {arguments.splits}':>20}")
        for label in MODELS:
            print(f"  {label:<22}{_cell(per_split[0][label]):>20}{_cell(mean[label]):>20}")
        first_goals = [_met(goal) for goal in goals(per_split[0])]
        mean_goals = [_met(goal) for goal in goals(mean)]
        print(
            f"  goal accuracy within {ACCURACY_MARGIN:.1%} of the best: split 0 {first_goals[0]}, "
            f"mean {mean_goals[0]}; log loss ≤ MLPClassifier: split 0 {first_goals[1]}, mean "
            f"{mean_goals[1]}"
        )
        if not arguments.no_record:
            append_row(
                SECTION,
                HEADER,
                f"| {datetime.date.today()} | {commit()} | {machine()} | {arguments.splits} | "
                f"{name} | " + " | ".join(_cell(mean[label]) for label in MODELS) + " | "
                f"{mean_goals[0]} | {mean_goals[1]} |",
            )


if __name__ == "__main__":
    main()
