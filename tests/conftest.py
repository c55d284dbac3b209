"""Shared test set-up: every test starts from the same global random state."""

import sys

import pytest
import torch

from softclass import cli
from softclass.training import mlp_native


@pytest.fixture(autouse=True)
def _seed_global_rng():
    torch.manual_seed(0)
    yield


@pytest.fixture(params=["compiled", "torch"])
def training_path(request, monkeypatch):
    """Run a test on the compiled training loops (softclass.training.mlp_native) and on the torch
    path of softclass.training.ensemble.BatchedTrainer."""
    if request.param == "torch":
        monkeypatch.setattr(mlp_native, "library", lambda: None)
    elif mlp_native.library() is None:
        pytest.fail(f"compiled training loops unavailable: {mlp_native.unavailable_reason()}")
    return request.param


@pytest.fixture
def one_thread():
    """Tiny networks run fastest (and reproducibly) on one thread of a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run(monkeypatch, capsys):
    """Run ``softclass ARGS`` in this process through the console entry point; returns
    ``(exit code, stdout, stderr)``."""

    def invoke(*args):
        monkeypatch.setattr(sys, "argv", ["softclass", *map(str, args)])
        try:
            cli.main()
            code = 0
        except SystemExit as stop:
            code = stop.code or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke
