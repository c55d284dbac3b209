"""The one training loop: its order of callbacks, chunked epochs, and stopping members."""

import math

import pytest
import torch

from softclass.mlp.model import MLP, MLPConfig, build_mlp
from softclass.training.loop import HISTORY_NAMES, Callback, FitLoop


class _Counting:
    """A backend whose training loss of member m after epoch e is 1 / (1 + e + m)."""

    def __init__(self, n_members=2, per_call=3):
        self.n_members = n_members
        self.per_call = per_call
        self.calls = []
        self.model = build_mlp(MLPConfig(2, 2), 0)

    def epochs_per_call(self):
        return self.per_call

    def run_epochs(self, first_epoch, n_epochs, running):
        self.calls.append((first_epoch, n_epochs, tuple(running)))
        epochs = torch.arange(first_epoch + 1, first_epoch + n_epochs + 1, dtype=torch.float64)
        members = torch.arange(self.n_members, dtype=torch.float64).view(-1, 1)
        return {"train_loss": 1 / (1 + epochs + members)}

    def member_parameters(self, member):
        return list(self.model.parameters())

    def member_model(self, member) -> MLP:
        return self.model

    def finite_members(self):
        return [True] * self.n_members


class _Record(Callback):
    def __init__(self, name, log, per_epoch=True):
        self.name, self.log, self.per_epoch = name, log, per_epoch

    def on_train_begin(self, loop):
        self.log.append((self.name, "begin", loop.epoch))

    def on_epoch_end(self, loop):
        self.log.append((self.name, "epoch", loop.epoch))

    def on_train_end(self, loop):
        self.log.append((self.name, "end", loop.epoch))


def test_callbacks_run_in_their_order_after_every_call():
    log = []
    loop = FitLoop(_Counting(), 2, [_Record("a", log), _Record("b", log)]).fit()
    assert log == [
        ("a", "begin", 0),
        ("b", "begin", 0),
        ("a", "epoch", 1),
        ("b", "epoch", 1),
        ("a", "epoch", 2),
        ("b", "epoch", 2),
        ("a", "end", 2),
        ("b", "end", 2),
    ]
    assert loop.record(1, 2)["train_loss"] == pytest.approx(1 / 4)
    assert set(loop.histories) == set(HISTORY_NAMES)
    assert math.isnan(loop.record(0, 1)["val_loss"])


def test_without_a_per_epoch_callback_the_backend_runs_chunks():
    backend = _Counting(per_call=3)
    loop = FitLoop(backend, 7, [_Record("chunks", [], per_epoch=False)]).fit()
    assert [call[:2] for call in backend.calls] == [(0, 3), (3, 3), (6, 1)]
    assert loop.epoch == 7 and len(loop.seconds) == 7


def test_a_stopped_member_is_no_longer_running_and_its_history_ends():
    class StopFirst(Callback):
        def on_epoch_end(self, loop):
            if loop.epoch == 2:
                loop.stop_member(0)

    backend = _Counting(per_call=1)
    loop = FitLoop(backend, 4, [StopFirst()]).fit(first_epoch=1)
    assert backend.calls[0] == (1, 1, (True, True))
    assert backend.calls[1] == (2, 1, (False, True))
    assert loop.epochs_run == [2, 4]
    assert math.isnan(loop.record(0, 3)["train_loss"]) and loop.finished
