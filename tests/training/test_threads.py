"""Thread count: chosen by the size of a step, set by the user, the caller's setting restored."""

import sys

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError

from softclass import cli
from softclass.data import bundled_path
from softclass.estimator import Classifier
from softclass.training import threads
from softclass.training.backends.batched import BatchedTrainer
from softclass.training.threads import choose_threads, step_flops, torch_threads

BENCHMARK_WIDTHS = (50, 128, 128, 10)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture
def machine(monkeypatch):
    """A 2-core machine whose 1-minute load average the test sets (``machine(load)``)."""
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)

    def with_load(load):
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, load, load), raising=False)

    return with_load


@pytest.fixture
def caller_threads():
    """The caller runs torch on 2 threads; the test checks it is given back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(previous)


def test_step_flops_counts_forward_and_backward_products():
    # 2·rows·in·out per layer forward, 4·rows·in·out backward; Σ in·out = 6400 + 16384 + 1280
    assert step_flops(256, BENCHMARK_WIDTHS) == 6 * 256 * 24_064


def test_small_steps_take_one_thread_even_on_an_idle_machine(machine):
    machine(0.0)
    below = threads.STEP_FLOPS_FOR_TWO_THREADS * 0.99
    assert choose_threads(1, (1, int(below / 6))) == 1
    assert choose_threads(16, (4, 7, 3)) == 1


def test_large_steps_take_the_idle_cores_only(machine):
    rows = int(threads.STEP_FLOPS_FOR_TWO_THREADS / step_flops(1, BENCHMARK_WIDTHS)) + 1
    machine(0.9)  # this process alone
    assert choose_threads(rows, BENCHMARK_WIDTHS) == 2
    machine(2.2)  # another job holds a core
    assert choose_threads(rows, BENCHMARK_WIDTHS) == 1
    machine(8.0)
    assert choose_threads(rows, BENCHMARK_WIDTHS) == 1


def test_larger_steps_take_more_of_the_idle_cores(machine, monkeypatch):
    machine(0.0)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    threshold = threads.STEP_FLOPS_FOR_TWO_THREADS
    per_row = step_flops(1, BENCHMARK_WIDTHS)
    assert choose_threads(int(threshold / per_row) + 1, BENCHMARK_WIDTHS) == 2
    assert choose_threads(int(2 * threshold / per_row) + 1, BENCHMARK_WIDTHS) == 4
    assert choose_threads(int(100 * threshold / per_row), BENCHMARK_WIDTHS) == 8
    machine(3.0)  # two other jobs
    assert choose_threads(int(100 * threshold / per_row), BENCHMARK_WIDTHS) == 6


def test_torchrun_ranks_share_the_cores(machine, monkeypatch):
    machine(0.0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.available_cores() == 1
    assert choose_threads(1 << 20, BENCHMARK_WIDTHS) == 1


def test_torch_threads_restores_the_setting_even_after_an_error(caller_threads):
    with pytest.raises(RuntimeError, match="inside"), torch_threads(1) as inside:
        assert inside == torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == caller_threads


def _record_threads(monkeypatch):
    """The torch thread count of every epoch trained (torch path or compiled step, whose BLAS
    runs on that count)."""
    seen = []
    train_epoch, run_compiled = BatchedTrainer.train_epoch, BatchedTrainer.run_compiled_epochs

    def recording(self, *args):
        seen.append(torch.get_num_threads())
        return train_epoch(self, *args)

    def recording_compiled(self, rows, first_epoch, n_epochs, *args):
        seen.extend([torch.get_num_threads()] * n_epochs)
        return run_compiled(self, rows, first_epoch, n_epochs, *args)

    monkeypatch.setattr(BatchedTrainer, "train_epoch", recording)
    monkeypatch.setattr(BatchedTrainer, "run_compiled_epochs", recording_compiled)
    return seen


def _table(rows=240):
    generator = np.random.default_rng(0)
    return generator.normal(size=(rows, 6)).astype(np.float32), np.arange(rows) % 3


@pytest.mark.parametrize("n_jobs", [None, 1, 2, -1])
def test_classifier_trains_on_n_jobs_threads_and_gives_the_setting_back(
    n_jobs, caller_threads, monkeypatch, machine
):
    machine(0.0)
    seen = _record_threads(monkeypatch)
    features, labels = _table()
    model = Classifier(hidden_layer_sizes=(300,), max_iter=2, n_jobs=n_jobs, random_state=0)
    model.fit(features, labels)
    expected = {None: 1, 1: 1, 2: 2, -1: 2}[n_jobs]  # None: this step is small -> 1
    assert seen == [expected, expected]
    assert torch.get_num_threads() == caller_threads
    model.partial_fit(features, labels)
    assert seen[-1] == expected and torch.get_num_threads() == caller_threads
    model.predict_proba(features)
    assert torch.get_num_threads() == caller_threads


def test_classifier_default_picks_two_threads_for_a_large_step(
    caller_threads, monkeypatch, machine
):
    machine(0.0)
    monkeypatch.setattr(threads, "STEP_FLOPS_FOR_TWO_THREADS", 1.0)
    seen = _record_threads(monkeypatch)
    torch.set_num_threads(1)
    features, labels = _table()
    Classifier(hidden_layer_sizes=(300,), max_iter=1, random_state=0).fit(features, labels)
    assert seen == [2]
    assert torch.get_num_threads() == 1


def test_classifier_refuses_zero_jobs():
    with pytest.raises(InvalidParameterError, match="The 'n_jobs' parameter of Classifier must"):
        Classifier(n_jobs=0).fit(*_table())


@pytest.mark.parametrize(("option", "expected"), [([], 1), (["--threads", "2"], 2)])
def test_cli_threads_option(option, expected, caller_threads, monkeypatch, machine, tmp_path):
    """--threads N trains on N threads; the default 0 chooses (one for the Iris network)."""
    machine(0.0)
    from softclass.jobs import train_predict

    seen = []
    train = train_predict.train_to_directory

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return train(*args, **kwargs)

    monkeypatch.setattr(train_predict, "train_to_directory", recording)
    arguments = ["train", bundled_path("iris"), "--out", tmp_path / "m", "--epochs", "1", *option]
    monkeypatch.setattr(sys, "argv", ["softclass", *map(str, arguments)])
    try:
        cli.main()  # returns on success
    except SystemExit as stop:
        assert not stop.code
    assert seen == [expected]
    assert torch.get_num_threads() == caller_threads
