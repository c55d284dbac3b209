"""The one checkpoint format, and what main's code (6f3aaeb) left on disk.

``tests/fixtures/main_6f3aaeb`` was written by ``softclass train`` at main 6f3aaeb on the bundled
Iris: ``model/`` with 3 epochs of the batched engine (its model directory and its checkpoint,
already the one format), and ``bf16_checkpoint.pt`` of ``--precision bf16`` (the autograd
Trainer's torch.save archive, which this version refuses in one line).
"""

import shutil
from pathlib import Path

import pytest
import torch

from softclass.data import bundled_path
from softclass.errors import ConfigError, ModelFileError
from softclass.jobs.store import load_model
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLPConfig
from softclass.training.backends.autograd import AutogradEpochs, Trainer
from softclass.training.checkpoint import checkpoint_progress
from softclass.training.config import TrainConfig

MAIN = Path(__file__).resolve().parents[1] / "fixtures" / "main_6f3aaeb"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_model_directory_saved_by_main_loads_and_predicts(run, tmp_path):
    saved = load_model(MAIN / "model")
    assert saved.design.name == "A" and saved.model_config == MLPConfig(4, 3, (7,), "tanh")
    assert saved.history_summary["epochs"] == 3
    output = tmp_path / "p.csv"
    code, _, error = run("predict", MAIN / "model", bundled_path("iris"), "--output", output)
    assert code == 0, error
    lines = output.read_text().splitlines()
    assert len(lines) == 151  # a header and one row per input row


def test_a_run_checkpointed_by_main_resumes(run, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(MAIN / "model", out)
    assert checkpoint_progress(out / "checkpoint.pt") == (3, 3)
    code, _, error = run("train", bundled_path("iris"), "--out", out, "--epochs", "5", "--resume")
    assert code == 0, error
    assert checkpoint_progress(out / "checkpoint.pt") == (5, 5)
    assert load_model(out).history_summary["epochs"] == 5


def test_mains_autograd_checkpoint_is_refused_in_one_line(run, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    shutil.copy(MAIN / "bf16_checkpoint.pt", out / "checkpoint.pt")
    common = ("train", bundled_path("iris"), "--out", out, "--precision", "bf16")
    code, _, error = run(*common, "--epochs", "3", "--resume")
    assert code != 0
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1, error
    assert "a checkpoint of an earlier softclass" in lines[0] and "without --resume" in lines[0]


def test_lockstep_autograd_runs_have_no_checkpoint():
    features, targets = torch.randn(12, 4), torch.arange(12) % 3
    trainers = [Trainer(get_design(name), MLPConfig(4, 3), TrainConfig(epochs=1)) for name in "AB"]
    for trainer in trainers:
        trainer.initialize(features, targets)
    with pytest.raises(ConfigError, match=r"a checkpoint of autograd runs holds one model"):
        AutogradEpochs(trainers).stacked_state()
    state = AutogradEpochs(trainers[:1]).stacked_state()
    assert state.members == (("A", 0),) and state.parameters[0].shape == (1, 7, 4)


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(ModelFileError, match=r"none\.pt: no checkpoint to resume from"):
        checkpoint_progress(tmp_path / "none.pt")
