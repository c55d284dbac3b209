"""The answer first: verdict sentences (bounds never understate) and coinciding curves."""

import json

import numpy as np
import pytest

from softclass.evaluation.report import epochs_shown
from softclass.evaluation.stacking import coinciding, stacked_label, stacked_style
from softclass.evaluation.verdicts import bound, verdict_sentences
from softclass.mlp.designs import DESIGNS

TITLES = {"A": "logits + cross entropy", "B": "log_softmax + NLL", "C": "softmax + MSE"}
LOSSES = {"A": "cross_entropy", "B": "nll", "C": "mse"}


def _summary(*agreements, seeds=(0,)):
    return {
        "seeds": list(seeds),
        "designs": {
            name: {
                "title": TITLES[name],
                "loss": LOSSES[name],
                "mean_over_seeds": {"validation_accuracy": 0.9, "validation_log_loss": 0.25},
            }
            for name in "ABC"
        },
        "agreement": list(agreements),
    }


def _agreement(pair, verdict, gradient, weight, floor=None, seed=0):
    return {
        "pair": pair,
        "seed": seed,
        "verdict": verdict,
        "max_gradient_diff": gradient,
        "max_weight_diff": weight,
        "noise_floor": floor,
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [(3.58e-7, "3.6e-7"), (3.01e-15, "3.1e-15"), (3e-15, "3e-15"), (9.96e-3, "1e-2"),
     (2.1e-3, "2.1e-3"), (0.0, "0"), (None, "?"), (float("nan"), "?"), (1.0, "1e0")],
)  # fmt: skip
def test_bound_rounds_up_to_two_digits(value, text):
    assert bound(value) == text
    if value is not None and value == value and value > 0:
        assert float(text) >= value  # a bound never claims less than was measured


def test_sentences_say_same_or_different_in_words_first():
    summary = _summary(
        _agreement("A-B", "equal up to rounding", 2.6e-15, 3.58e-7),
        _agreement("A-C", "different", 1.51, 0.405),
        _agreement("A-B", "identical", 0.0, 0.0, seed=1),  # another seed: not the answer
    )
    same, different = verdict_sentences(summary)
    assert same.sentence == (
        "A (logits + cross entropy) and B (log_softmax + NLL) are the same computation: every "
        "step made the same update (float64 gradients equal to within 2.6e-15); their float32 "
        "weights differ only by rounding (≤ 3.6e-7)."
    )
    assert same.same and not different.same
    assert different.sentence.startswith(
        "A (logits + cross entropy) and C (softmax + MSE) are different computations: C "
        "minimises another loss (float64 gradients differ by 151%)"
    )
    assert "C has accuracy 0.900 (A: 0.900) and log loss 0.2500 (A: 0.2500)" in different.sentence


def test_identical_and_noise_floor_sentences():
    summary = _summary(
        _agreement("A-B", "identical", 1e-16, 0.0),
        _agreement("A-C", "equal up to rounding", 1e-15, 2.1e-3, floor=1.6e-3),
    )
    identical, drifting = (verdict.sentence for verdict in verdict_sentences(summary))
    assert "came out bit for bit the same" in identical
    assert "drift apart by rounding (≤ 2.1e-3; A against itself" in drifting
    assert "drifts ≤ 1.6e-3)" in drifting


def test_coinciding_curves_are_found_and_drawn_stacked():
    curves = {
        "A": np.array([0.1, 0.5, 0.9]),
        "B": np.array([0.1, 0.5, 0.9 + 1e-7]),
        "C": np.array([0.2, 0.4, 0.8]),
        "D": np.array([0.1, 0.5, 0.9]),
    }
    under = coinciding(curves, span=1.0)
    assert under == {"B": "A", "D": "A"}
    names = list(curves)
    widths = [stacked_style(name, under, names)["linewidth"] for name in "ABD"]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == 3
    assert stacked_style("C", under, names)["linewidth"] == 1.5
    assert stacked_label("D", "D", under) == "D: identical to A, drawn on top of it"
    assert stacked_label("C", "C", under) == "C"
    assert coinciding({"A": np.array([1e-7]), "B": np.array([1.1e-7])}, span=0.0) == {}


def test_compare_printout_opens_with_the_answer(run, tmp_path):
    code, out, err = run("compare", "--epochs", "3", "--out", tmp_path / "r")
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    sentences = [verdict.sentence for verdict in verdict_sentences(report)]
    printout = out[out.index("A (logits") :]  # after the typing table of the data
    text = " ".join(printout.split())
    opening = " ".join(sentences)
    assert text.startswith(opening)  # the answer first, one sentence per pair
    assert text.index(f"{' vs '.join(DESIGNS)} on the bundled Iris") > len(opening)
    assert "(the designs trained together); before it," in text
    assert "s loading the compiled code (not counted in the training time)" in text


def test_epochs_show_best_over_trained_as_in_the_terminal():
    def run(epochs, best):
        return {"epochs": epochs, "history": {"best_epoch": best}}

    summary = {
        "designs": {
            "A": {"per_seed": [run(19, 9)]},
            "B": {"per_seed": [run(19, 9), run(20, 10)]},
            "C": {"per_seed": [run(100, None)]},
            "D": {"per_seed": [run(60, 60), run(60, None)]},  # one seed without stopping
        }
    }
    assert epochs_shown(summary, "ABCD") == {"A": "9/19", "B": "9.5/19.5", "C": "100", "D": "60"}
