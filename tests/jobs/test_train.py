"""The training loop: determinism, A = B, early stopping, checkpoints, resume, safety."""

import copy
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch_reference import torch_optimizer

from softclass.errors import ConfigError, ModelFileError
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLPConfig
from softclass.mlp.optimizers import OPTIMIZERS
from softclass.training.backends.autograd import Trainer, fit
from softclass.training.checkpoint import checkpoint_progress
from softclass.training.config import TrainConfig, resolve_device
from softclass.training.results import EpochRecord, History
from softclass.training.schema import checkpoint as schema

SRC = Path(__file__).resolve().parents[2] / "src"
CONFIG = MLPConfig(4, 3)


pytestmark = pytest.mark.usefixtures("one_thread")


def _one_epoch_checkpoint(path, features, targets):
    """Train design A for one epoch, leaving its checkpoint at ``path``."""
    fit(
        get_design("A"),
        CONFIG,
        features,
        targets,
        config=TrainConfig(epochs=1),
        checkpoint_path=path,
    )


def _blobs(n_rows=60, seed=0):
    """Three separable Gaussian blobs in 4 features: float32 (N, 4), int64 (N,)."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(n_rows) % 3
    centers = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    features = centers[targets] + 0.5 * torch.randn(n_rows, 4, generator=generator)
    return features, targets


def _without_seconds(history):
    return [
        {key: value for key, value in record.items() if key != "seconds"}
        for record in history.to_dict()["records"]
    ]


def _weights(model):
    return torch.cat([parameter.detach().flatten() for parameter in model.parameters()])


def test_same_seed_same_weights_and_other_seed_other_weights():
    features, targets = _blobs()
    config = TrainConfig(epochs=5, batch_size=8)
    first = fit(get_design("A"), CONFIG, features, targets, config=config)
    second = fit(get_design("A"), CONFIG, features, targets, config=config)
    other = fit(get_design("A"), CONFIG, features, targets, config=TrainConfig(epochs=5, seed=1))
    assert torch.equal(_weights(first.model), _weights(second.model))
    assert not torch.equal(_weights(first.model), _weights(other.model))
    assert first.history.to_dict()["records"][0]["train_loss"] > 0


def test_designs_a_and_b_agree_at_every_epoch_and_c_differs():
    features, targets = _blobs()
    weights = {}

    class Recording(Trainer):
        def run_epoch(self):
            record = super().run_epoch()
            weights.setdefault(self.design.name, []).append(_weights(self.model_))
            return record

    histories = {}
    for name in "ABC":
        trainer = Recording(get_design(name), CONFIG, TrainConfig(epochs=6, batch_size=8))
        histories[name] = trainer.fit(features[:45], targets[:45], features[45:], targets[45:])
    for epoch in range(6):
        torch.testing.assert_close(weights["A"][epoch], weights["B"][epoch], rtol=0, atol=1e-6)
        assert (weights["A"][epoch] - weights["C"][epoch]).abs().max() > 1e-4
    for column in ("train_loss", "validation_loss"):
        a_values = histories["A"].history.column(column)
        b_values = histories["B"].history.column(column)
        assert max(abs(a - b) for a, b in zip(a_values, b_values, strict=True)) < 1e-6


def test_training_learns_separable_blobs_and_reports_progress():
    features, targets = _blobs(90)
    events = []
    result = fit(
        get_design("B"),
        CONFIG,
        features[:60],
        targets[:60],
        features[60:],
        targets[60:],
        TrainConfig(epochs=30),
        progress=events.append,
    )
    assert result.history.records[-1].validation_accuracy >= 0.9
    assert [event.epoch for event in events] == list(range(1, 31))
    assert [event.finished for event in events] == [False] * 29 + [True]
    assert events[0].label == "B" and events[0].epochs == 30
    assert not result.model.training


def test_early_stopping_restores_the_best_weights():
    features, targets = _blobs(60)
    validation_features = features[45:] + 3.0 * torch.randn(15, 4)  # noisy: loss turns up
    snapshots = {}

    class Recording(Trainer):
        def run_epoch(self):
            record = super().run_epoch()
            snapshots[record.epoch] = _weights(self.model_)
            return record

    config = TrainConfig(epochs=200, learning_rate=0.2, patience=3)
    trainer = Recording(get_design("A"), CONFIG, config)
    result = trainer.fit(features[:45], targets[:45], validation_features, targets[45:])
    history = result.history
    assert history.stopped_early and history.epochs < 200
    losses = history.column("validation_loss")
    assert history.best_epoch == 1 + losses.index(min(losses))
    assert history.epochs == history.best_epoch + 3
    assert torch.equal(_weights(result.model), snapshots[history.best_epoch])


# Every registry optimizer, SGD also with Nesterov momentum, each with weight decay; one in bf16.
RESUMED_OPTIMIZERS = [
    *[{"optimizer": name, "weight_decay": 0.01} for name in OPTIMIZERS],
    {"optimizer": "sgd", "nesterov": True, "weight_decay": 0.01},
    {"optimizer": "adamw", "weight_decay": 0.01, "precision": "bf16"},
]


@pytest.mark.parametrize("options", RESUMED_OPTIMIZERS, ids=lambda options: str(options))
@pytest.mark.parametrize("hidden", [(7,), (128, 80)], ids=["tiny", "wide"])
def test_checkpoint_resume_gives_the_uninterrupted_weights(tmp_path, hidden, options):
    features, targets = _blobs()
    split = (features[:45], targets[:45], features[45:], targets[45:])
    model_config = MLPConfig(4, 3, hidden)
    config = TrainConfig(epochs=6, batch_size=7, learning_rate=0.01, **options)
    whole = fit(get_design("D"), model_config, *split, config)
    path = tmp_path / "checkpoint.pt"
    fit(
        get_design("D"),
        model_config,
        *split,
        TrainConfig(**{**config.to_dict(), "epochs": 4}),
        checkpoint_path=path,
    )
    saved = schema.read_batched_checkpoint_header(path)  # the one format, M = 1
    assert saved.epoch == 4 and saved.members == (("D", 0),)
    assert saved.step_count == 4 * 7  # 45 rows in batches of 7: 7 per epoch
    resumed = fit(get_design("D"), model_config, *split, config, checkpoint_path=path, resume=True)
    assert torch.equal(_weights(resumed.model), _weights(whole.model))
    assert _without_seconds(resumed.history) == _without_seconds(whole.history)
    assert resumed.history.epochs == 6


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_the_trainer_steps_only_the_parameters_with_a_gradient(name):
    """The output layer gets no gradient: the Trainer's step leaves it alone, as torch.optim's
    (for-each form: torch's fused SGD fails on a missing gradient) does, and updates the rest."""
    features, targets = _blobs()
    trainer = Trainer(get_design("A"), CONFIG, TrainConfig(optimizer=name, weight_decay=0.1))
    trainer.initialize(features, targets)
    model = trainer.model_
    reference = copy.deepcopy(model)
    optimizer = torch_optimizer(name, reference.parameters(), trainer.config.optimizer_params)
    untouched = [tensor.detach().clone() for tensor in model.parameters()]
    for _ in range(3):
        for network in (model, reference):
            network.zero_grad()
            network.layers[1](network.layers[0](features)).square().mean().backward()
        trainer.optimizer_step()
        optimizer.step()
    weight, bias, out_weight, out_bias = model.parameters()
    assert torch.equal(out_weight, untouched[2]) and torch.equal(out_bias, untouched[3])
    assert not torch.equal(weight, untouched[0]) and not torch.equal(bias, untouched[1])
    for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)
    assert trainer.optimizer_state_.step_count == 3
    if trainer.optimizer_state_.second_moments:
        assert [float(count) for count in trainer.optimizer_state_.step_counts] == [3, 3, 0, 0]


def test_resume_refuses_another_design_or_other_data(tmp_path):
    features, targets = _blobs()
    path = tmp_path / "checkpoint.pt"
    _one_epoch_checkpoint(path, features, targets)
    with pytest.raises(
        ModelFileError, match=r"members \[\['A', 0\]\] differs from this run's \[\['C', 0\]\]"
    ):
        fit(get_design("C"), CONFIG, features, targets, checkpoint_path=path, resume=True)
    with pytest.raises(ModelFileError, match="written for other training data"):
        fit(get_design("A"), CONFIG, features + 1, targets, checkpoint_path=path, resume=True)
    with pytest.raises(ModelFileError, match="does not exist"):
        fit(
            get_design("A"),
            CONFIG,
            features,
            targets,
            checkpoint_path=tmp_path / "none.pt",
            resume=True,
        )
    with pytest.raises(ConfigError, match="resume needs a checkpoint_path"):
        fit(get_design("A"), CONFIG, features, targets, resume=True)


class _Exploit:
    """Pickles into a call of os.system: loading it unsafely would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _resume(path, features, targets):
    fit(
        get_design("A"),
        CONFIG,
        features,
        targets,
        config=TrainConfig(epochs=2),
        checkpoint_path=path,
        resume=True,
    )


def test_a_malicious_pickle_checkpoint_is_refused_not_executed(tmp_path):
    """Never unpickled: a torch.save archive is recognised by its first bytes and refused."""
    features, targets = _blobs()
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "payload": _Exploit(marker)}, path)
    with pytest.raises(ModelFileError, match=r"a checkpoint of an earlier softclass"):
        _resume(path, features, targets)
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ModelFileError, match=r"not a softclass checkpoint"):
        _resume(path, features, targets)
    assert not marker.exists()


@pytest.mark.parametrize("old_format", [1, 2])
def test_an_old_torch_save_checkpoint_is_one_line_saying_what_to_do(tmp_path, old_format):
    """The autograd Trainer's checkpoints of earlier versions (torch.save, formats 1 and 2)."""
    features, targets = _blobs()
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": old_format, "design": "A", "model": {"w": torch.zeros(2)}}, path)
    message = (
        r"checkpoint\.pt: a checkpoint of an earlier softclass \(format 1 or 2, a torch\.save "
        r"archive\); this softclass reads its safetensors checkpoints \(format 2\) only: train "
        r"again without --resume"
    )
    with pytest.raises(ModelFileError, match=message) as caught:
        _resume(path, features, targets)
    assert "\n" not in str(caught.value)


def test_the_cli_resuming_an_old_checkpoint_prints_one_line(tmp_path, run):
    """``softclass train --resume`` of the autograd Trainer (bf16) on an old checkpoint."""
    from softclass.data.bundled import bundled_path

    out = tmp_path / "model"
    common = ("train", bundled_path("iris"), "--out", out, "--precision", "bf16")
    code, _, error = run(*common, "--epochs", "1")
    assert code == 0, error
    path = out / "checkpoint.pt"
    assert checkpoint_progress(path) == (1, 1)  # the one format, written by the autograd backend
    torch.save({"format": 2, "optimizer": {"state": {}, "param_groups": []}}, path)
    code, _, error = run(*common, "--epochs", "2", "--resume")
    assert code != 0
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1, error
    assert f"{path}: a checkpoint of an earlier softclass" in lines[0]
    assert "without --resume" in lines[0]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        sys.path.insert(0, {str(tmp_path)!r})
        torch.set_num_threads(1)
        from softclass.mlp.designs import get_design
        from softclass.mlp.model import MLPConfig
        from softclass.training.backends.autograd import fit
        from softclass.training.config import TrainConfig
        from test_data_blobs import blobs
        features, targets = blobs()
        def progress(event):
            print(event.epoch, flush=True)
            time.sleep(0.15)
        fit(get_design("A"), MLPConfig(4, 3), features[:45], targets[:45], features[45:],
            targets[45:], TrainConfig(epochs=40, batch_size=8),
            checkpoint_path={str(checkpoint)!r}, progress=progress)
        """
    )
    (tmp_path / "test_data_blobs.py").write_text(
        "import torch\n"
        "def blobs():\n"
        "    generator = torch.Generator().manual_seed(0)\n"
        "    targets = torch.arange(60) % 3\n"
        "    centers = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])\n"
        "    return centers[targets] + 0.5 * torch.randn(60, 4, generator=generator), targets\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=environment
    )
    reported = []
    deadline = time.monotonic() + 120
    while len(reported) < 5 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        reported.append(int(line))
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert len(reported) == 5, "the training process did not get going"
    saved_epoch = checkpoint_progress(checkpoint)[0]
    assert 5 <= saved_epoch < 40  # at most the interrupted epoch is lost

    sys.path.insert(0, str(tmp_path))
    try:
        from test_data_blobs import blobs
    finally:
        sys.path.remove(str(tmp_path))
    features, targets = blobs()
    split = (features[:45], targets[:45], features[45:], targets[45:])
    config = TrainConfig(epochs=40, batch_size=8)
    resumed = fit(get_design("A"), CONFIG, *split, config, checkpoint_path=checkpoint, resume=True)
    whole = fit(get_design("A"), CONFIG, *split, config)
    assert torch.equal(_weights(resumed.model), _weights(whole.model))
    assert resumed.history.epochs == 40


def test_bf16_autocast_trains_with_finite_losses():
    features, targets = _blobs()
    result = fit(
        get_design("A"), CONFIG, features, targets, config=TrainConfig(epochs=3, precision="bf16")
    )
    assert all(math.isfinite(loss) for loss in result.history.column("train_loss"))
    assert next(result.model.parameters()).dtype == torch.float32


def test_history_json_round_trip_turns_nan_into_null():
    history = History([EpochRecord(1, math.nan, 0.5, None, None, 0.1)], None, False)
    data = json.loads(json.dumps(history.to_dict(), allow_nan=False))
    assert data["records"][0]["train_loss"] is None
    back = History.from_dict(data)
    assert math.isnan(back.records[0].train_loss) and back.records[0].validation_loss is None
    assert back.summary()["epochs"] == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, r"epochs=0 must be an integer ≥ 1"),
        ({"batch_size": 2.5}, r"batch_size=2.5 must be an integer"),
        (
            {"optimizer": "no-such-optimizer"},
            r"optimizer='no-such-optimizer': expected one of sgd, adam, adamw, rmsprop$",
        ),
        ({"device": "tpu"}, r"device='tpu': expected one of auto, cpu, cuda"),
        ({"precision": "fp16"}, r"precision='fp16': expected one of fp32, bf16"),
        ({"learning_rate": 0}, r"learning_rate=0 must be > 0"),
        ({"momentum": -1}, r"momentum=-1 must be a number ≥ 0"),
        (
            {"validation_fraction": 1.0},
            r"validation_fraction=1.0 must lie in \[0, 1\) \(0 = none\)$",
        ),
        ({"validation_fraction": "x"}, r"validation_fraction='x' must be a number"),
        ({"patience": 0}, r"patience=0 must be an integer ≥ 1"),
        ({"seed": -1}, r"seed=-1 must be an integer ≥ 0"),
        ({"checkpoint_every": 0}, r"checkpoint_every=0"),
    ],
)
def test_bad_options_name_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**options)


def test_train_config_round_trip_and_unknown_keys():
    config = TrainConfig(epochs=3, patience=2)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"unknown training option\(s\) \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})


def test_cuda_without_a_device_is_a_config_error():
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        return
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f, t: (f[:, :3], t), r"training features must have shape \(N, 4\)"),
        (lambda f, t: (f.long(), t), "must be floating point"),
        (lambda f, t: (f, t[:-1]), r"training targets must have shape \(60,\)"),
        (lambda f, t: (f, t.float()), "must be integer class indices"),
        (lambda f, t: (f[:0], t[:0]), "training part has no rows"),
        (lambda f, t: (f, torch.where(t == 2, 3, t)), r"target 3 at row 2 is outside \[0, 2\]"),
        (lambda f, t: (torch.where(f > 1.5, math.nan, f), t), "NaN or infinite"),
        (lambda f, t: (f.numpy(), t), "must be torch tensors"),
    ],
)
def test_bad_training_tensors_are_refused(change, message):
    features, targets = _blobs()
    features, targets = change(features, targets)
    with pytest.raises(ConfigError, match=message):
        fit(get_design("A"), CONFIG, features, targets, config=TrainConfig(epochs=1))


def test_early_stopping_needs_validation_rows_and_validation_needs_both_parts():
    features, targets = _blobs()
    with pytest.raises(ConfigError, match=r"early stopping \(patience=2\) needs validation rows"):
        fit(get_design("A"), CONFIG, features, targets, config=TrainConfig(patience=2))
    with pytest.raises(ConfigError, match="give both validation_features and validation_targets"):
        fit(get_design("A"), CONFIG, features, targets, features, None)


def test_pairing_checker_warns_once_on_a_wrong_pairing_and_never_on_the_designs(recwarn):
    from dataclasses import replace

    from softclass.diagnostics.check import PairingWarning

    features, targets = _blobs()
    for name in "ABCD":
        fit(get_design(name), CONFIG, features, targets, config=TrainConfig(epochs=2))
    assert not [w for w in recwarn.list if issubclass(w.category, PairingWarning)]
    double_softmax = replace(get_design("A"), output=get_design("C").output)
    with pytest.warns(PairingWarning, match="double-softmax") as caught:
        fit(double_softmax, CONFIG, features, targets, config=TrainConfig(epochs=3))
    assert len([w for w in caught if issubclass(w.category, PairingWarning)]) == 1


def test_a_report_larger_than_the_memory_budget_is_refused_before_training():
    from softclass.jobs.train_predict import check_report_fits

    check_report_fits(10_000, 20_000, 12 * 2**30)  # the default class limit fits in 12 GiB
    with pytest.raises(
        ConfigError,
        match=r"50,000 classes: the training report would need about 48\.4 GiB \(a 50,000 × "
        r"50,000 confusion matrix and 20,000 validation rows × 50,000 probabilities\), more "
        r"than the 12\.0 GiB",
    ):
        check_report_fits(50_000, 20_000, 12 * 2**30)
