"""Shared test set-up: the checkout's C libraries are up to date, every test starts from the same
global random state."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from softclass import cli
from softclass.training import mlp_native


def pytest_configure(config):
    """Build the C libraries in place (``python setup.py build_ext --inplace``), as ``pip install
    -e .`` does, before any test loads them: in a checkout used through ``PYTHONPATH=src`` they
    may be missing or older than a C file changed by a merge (softclass itself never compiles and
    refuses a stale library). setuptools rebuilds only what changed; once, not per xdist worker.
    A build that fails leaves the tests of the compiled paths to fail, saying why."""
    if hasattr(config, "workerinput"):
        return
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        check=False,
    )


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
def table_file(tmp_path):
    """A small user's table (not the bundled Iris, so the table defaults apply): a number, a
    category and a two-class target, 120 rows, as a CSV file."""
    import numpy as np
    import polars as pl

    generator = np.random.default_rng(0)
    size = generator.normal(size=120) * 10 + 50
    frame = pl.DataFrame(
        {
            "size": size,
            "colour": generator.choice(["red", "blue"], size=120),
            "label": np.where(size > 50, "big", "small"),
        }
    )
    path = tmp_path / "table.csv"
    frame.write_csv(path)
    return path


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
