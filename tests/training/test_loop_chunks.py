"""The loop runs several epochs per backend call when its callbacks allow it, and every number
it reports is the one a call per epoch gives: histories, weights, progress events and the
agreement probe's per-epoch weight differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from softclass.evaluation.agreement import AgreementProbe, agreement_plan
from softclass.jobs.compare import compare
from softclass.mlp.model import MLPConfig
from softclass.training import loop as loop_module
from softclass.training.callbacks import ProgressReport
from softclass.training.config import TrainConfig
from softclass.training.ensemble import design_seed_grid, train_ensemble
from softclass.training.loop import Callback


class EveryEpoch(Callback):
    """Forces one epoch per call (the reference) and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def on_epoch_end(self, loop) -> None:
        self.calls += 1


class CountCalls(Callback):
    per_epoch = False

    def __init__(self) -> None:
        self.calls = 0

    def on_epoch_end(self, loop) -> None:
        self.calls += 1


def _run(data, per_epoch: bool, epochs: int = 23, backend: str = "auto", hidden=(6,)):
    config = MLPConfig(4, 3, hidden=hidden, activation="tanh")
    settings = TrainConfig(epochs=epochs, batch_size=16, learning_rate=0.05, backend=backend)
    names = ("A", "B", "C", "D")
    members = design_seed_grid("".join(names), [0, 1])
    agreements, probe, every = agreement_plan(names, 0, data, epochs)
    events = []
    counter = EveryEpoch() if per_epoch else CountCalls()
    callbacks = [
        ProgressReport(events.append, {0: "A", 1: "B"}, validation=True),
        AgreementProbe(agreements, {name: 2 * k for k, name in enumerate(names)}, probe, every),
        counter,
    ]
    result = train_ensemble(
        config,
        members,
        data.train_features,
        data.train_targets,
        settings,
        data.validation_features,
        data.validation_targets,
        callbacks=callbacks,
    )
    return result, agreements, events, counter.calls


@pytest.fixture(scope="module")
def iris():
    from softclass.data import load_bundled
    from softclass.data.prepare import prepare_table

    return prepare_table(load_bundled("iris"))


@pytest.mark.parametrize(
    ("backend", "hidden"),
    [("auto", (6,)), ("auto", (256,)), ("torch", (6,))],
    ids=["compiled-rows", "compiled-wide", "torch"],
)
def test_chunked_calls_report_what_one_call_per_epoch_reports(iris, backend, hidden, monkeypatch):
    """The row loops (Iris), the wide step (products through BLAS when it is installed) and the
    torch path each give the same numbers in chunks as one epoch per call."""
    monkeypatch.setattr(loop_module, "CALL_SECONDS", 1e9)  # chunks bounded by the probe only
    reference, reference_agreements, reference_events, calls = _run(
        iris, True, backend=backend, hidden=hidden
    )
    chunked, agreements, events, chunked_calls = _run(iris, False, backend=backend, hidden=hidden)
    assert calls == 23
    if backend == "auto":  # the compiled loops: epoch 1, then up to each probe epoch, the last
        assert chunked_calls < 23
    for name in ("train_loss", "val_loss", "val_accuracy", "train_accuracy"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(reference, name))
    for got, want in zip(chunked.network.parameters(), reference.network.parameters(), strict=True):
        assert torch.equal(got, want)
    assert len(agreements) == len(reference_agreements) == 3
    for got, want in zip(agreements, reference_agreements, strict=True):
        assert len(got.weight_diff) == 23
        assert got.weight_diff == want.weight_diff
        assert got.loss_diff == want.loss_diff
        assert (
            got.gradient_epochs == want.gradient_epochs and got.gradient_diff == want.gradient_diff
        )
    assert [(e.label, e.epoch, e.finished) for e in events] == [
        (e.label, e.epoch, e.finished) for e in reference_events
    ]
    assert [e.epoch for e in events if e.label == "A"] == list(range(1, 24))


def test_a_call_lasts_about_call_seconds_once_the_pace_is_known(iris, monkeypatch):
    monkeypatch.setattr(loop_module, "CALL_SECONDS", 0.0)  # no time for more than one epoch
    _, _, events, calls = _run(iris, False, epochs=12)
    assert calls == 12
    assert [e.epoch for e in events if e.label == "B"] == list(range(1, 13))


def test_compare_writes_the_same_agreement_whatever_the_chunks(iris, monkeypatch):
    first = compare(iris, "ABCD", TrainConfig(epochs=30))
    monkeypatch.setattr(loop_module, "CALL_SECONDS", 0.0)
    second = compare(iris, "ABCD", TrainConfig(epochs=30))
    for got, want in zip(first.agreements, second.agreements, strict=True):
        assert got.weight_diff == want.weight_diff and len(got.weight_diff) == 30


def test_the_gradient_probe_differentiates_the_smoothed_losses(iris):
    """With label smoothing the probe compares the losses the designs train on: A's gradient is
    that of torch's cross_entropy(label_smoothing=ε), B and D make the same update, C does not."""
    import torch.nn.functional as F

    from softclass.evaluation.agreement import record_gradient_pair
    from softclass.mlp.model import build_mlp

    model = build_mlp(MLPConfig(4, 3, hidden=(5,), activation="tanh"), 0)
    agreements, probe, _ = agreement_plan(("A", "B", "C", "D"), 0, iris, 10, 0.1)
    assert probe.label_smoothing == 0.1
    gradients: dict = {}
    for agreement in agreements:
        record_gradient_pair(agreement, model, gradients, probe, 1)
    weights = {
        name: p.detach().double().requires_grad_(True) for name, p in model.named_parameters()
    }
    logits = torch.func.functional_call(model, weights, (probe.features.double(),))
    loss = F.cross_entropy(logits, probe.targets, label_smoothing=0.1)
    reference = torch.autograd.grad(loss, list(weights.values()), retain_graph=True)
    unsmoothed = torch.autograd.grad(F.cross_entropy(logits, probe.targets), list(weights.values()))
    for got, want in zip(gradients["A"], reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    pairs = zip(gradients["A"], unsmoothed, strict=True)
    assert any(not torch.allclose(got, plain) for got, plain in pairs)
    verdicts = {(a.first, a.second): a.gradient_diff[0] for a in agreements}
    assert verdicts[("A", "B")] < 1e-9 and verdicts[("A", "D")] < 1e-9
    assert verdicts[("A", "C")] > 1e-3
