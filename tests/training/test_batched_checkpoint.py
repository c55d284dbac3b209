"""Checkpoints of the batched engine (format 2: safetensors + a JSON header) as untrusted input:
every damaged or hostile file is one ModelFileError naming the file, the field and what was
expected, raised before a tensor is read from it; nothing is ever unpickled from a format-2 file;
a sound checkpoint resumes to the weights of an uninterrupted run. The hostile files are made here.
"""

import json
import math
import struct
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from json_fuzz import FUZZ, JSON_VALUES, json_paths, replace_at
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from softclass import cli
from softclass.data import bundled_path
from softclass.errors import ConfigError, ModelFileError, TrainingDiverged
from softclass.mlp.designs import get_design
from softclass.mlp.model import MLPConfig
from softclass.training.backends.autograd import fit
from softclass.training.config import TrainConfig
from softclass.training.engine import checkpoint_progress, train_model
from softclass.training.ensemble import Member, train_ensemble
from softclass.training.schema import checkpoint as schema
from softclass.training.schema.checkpoint import BATCHED_METADATA_KEY as KEY

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = MLPConfig(4, 3)
N_ROWS = 30  # batch size 16: 2 optimizer steps per epoch


def _blobs(n_rows=N_ROWS, seed=0):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(n_rows) % 3
    features = torch.nn.functional.one_hot(targets, 4).float() * 2
    return features + 0.3 * torch.randn(n_rows, 4, generator=generator), targets


FEATURES, TARGETS = _blobs()
VALIDATION = _blobs(9, seed=1)


def _config(epochs, **options):
    return TrainConfig(
        **{"epochs": epochs, "optimizer": "adam", "patience": 5, "device": "cpu", **options}
    )


def _train(path, epochs, resume=False, validation=True, features=FEATURES, **options):
    return train_model(
        get_design("A"),
        CONFIG,
        _config(epochs, **options),
        features,
        TARGETS,
        *(VALIDATION if validation else ()),
        checkpoint_path=path,
        resume=resume,
    )


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("batched") / "checkpoint.pt"
    _train(path, 2)
    return path.read_bytes()


@pytest.fixture
def checkpoint(tmp_path, good_checkpoint):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(good_checkpoint)
    return path


def _split(raw):
    """(safetensors header, the JSON document, the tensors) of a checkpoint's bytes."""
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    return header, json.loads(header["__metadata__"][KEY]), safetensors_load(raw)


def _write(path, document, tensors):
    path.write_bytes(safetensors_save(tensors, metadata={KEY: json.dumps(document)}))


def _write_header(path, header, body):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


def _rewrite(path, change_document=None, change_tensors=None):
    _, document, tensors = _split(path.read_bytes())
    if change_document is not None:
        change_document(document)
    if change_tensors is not None:
        change_tensors(tensors)
    _write(path, document, tensors)


@pytest.fixture
def no_tensor_read(monkeypatch):
    """Fail the test if a tensor of the checkpoint is read (safetensors' loader runs)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read from a checkpoint that should be refused")

    monkeypatch.setattr(schema, "safetensors_load", refuse)


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load ran on a format-2 checkpoint")

    monkeypatch.setattr(torch, "load", refuse)


def _set(key, value):
    return lambda document: document.update({key: value})


def _nested(*keys_and_value):
    *keys, last, value = keys_and_value

    def change(document):
        target = document
        for key in keys:
            target = target[key]
        target[last] = value

    return change


def _pop(key):
    return lambda document: document.pop(key)


# -- the JSON header: every field typed, shaped and range-checked, before any tensor is read -------

DAMAGED_FIELDS = [
    (_set("format", 1), r"a checkpoint of an earlier softclass \(format 1, a torch\.save archive"),
    (_set("format", 3), r"batched-engine checkpoint format 3; this softclass reads format 2"),
    (_set("format", True), r"batched-engine checkpoint format True; this softclass reads"),
    (_set("format", "2"), r"batched-engine checkpoint format '2'; this softclass reads"),
    (_set("engine", "autograd"), r"field 'engine' is 'autograd'; expected 'batched'"),
    (_set("extra", 1), r"field 'softclass_checkpoint' has unknown key\(s\) \['extra'\]"),
    (_pop("step_count"), r"field 'softclass_checkpoint' lacks key\(s\) \['step_count'\]"),
    (_set("members", "A"), r"field 'members' is 'A'; expected a list of \[design, seed\] pairs"),
    (_set("members", []), r"field 'members' is a list of 0 items; expected at least one"),
    (_set("members", [["A"]]), r"field 'members\[0\]' is a list of 1 items; expected a \[design"),
    (_set("members", [["Z", 0]]), r"field 'members\[0\]\[0\]': unknown design 'Z'"),
    (_set("members", [["a", 0]]), r"field 'members\[0\]\[0\]' is 'a'; expected the design's name"),
    (_set("members", [["A", -1]]), r"field 'members\[0\]\[1\]' is -1; expected an integer in"),
    (_set("members", [["A", 0.5]]), r"field 'members\[0\]\[1\]' is 0\.5; expected an integer"),
    (_set("members", [["A", 2**70]]), r"'members\[0\]\[1\]' is 1180591620717411303424; expected"),
    (_set("model_config", [4, 3]), r"field 'model_config' is a list of 2 items; expected a map"),
    (_nested("model_config", "hidden", [1e30]), r"'model_config\.hidden\[0\]' is 1e\+30"),
    (_nested("model_config", "hidden", [10**8]), r"parameters: at most 100,000,000"),
    (_nested("model_config", "hidden", [1] * 101), r"expected at most 100 hidden layer widths"),
    (_set("train_config", "adam"), r"field 'train_config' is 'adam'; expected a mapping"),
    (_nested("train_config", "lr", 1), r"field 'train_config': unknown training option\(s\) \['lr"),
    (_nested("train_config", "epochs", 1e30), r"field 'train_config': epochs=1e\+30 must be an"),
    (_nested("train_config", "epochs", 10**9), r"epochs=1000000000 must be at most 1,000,000"),
    (_nested("train_config", "betas", [0.9]), r"'train_config\.betas' is a list of 1 items"),
    (_nested("train_config", "betas", [0.9, "x"]), r"'train_config\.betas\[1\]' is 'x'; expected"),
    (
        _nested("train_config", "optimizer", "no-such-optimizer"),
        r"optimizer='no-such-optimizer': expected one of sgd, adam, adamw, rmsprop$",
    ),
    (_nested("train_config", "seed", [0]), r"'train_config\.seed' is a list of 1 items; expected"),
    (_nested("train_config", "seed", 10**30), r"'train_config\.seed' is an integer of about 31 d"),
    (_nested("train_config", "monitor", "x" * 2000), r"'train_config\.monitor' is 'xxxxxxxxxxx"),
    (_set("data_fingerprint", None), r"field 'data_fingerprint' is None; expected a SHA-256"),
    (_set("data_fingerprint", "Z" * 64), r"field 'data_fingerprint' is 'ZZZZ.*expected a SHA-256"),
    (_set("dtype", "int8"), r"field 'dtype' is 'int8'; expected one of \['float16', 'bfloat16'"),
    (_set("dtype", "float64"), r"tensor 'parameters\.0' is F32 of shape \(1, 7, 4\); expected F64"),
    (_set("epoch", None), r"field 'epoch' is None; expected an integer in \[1, 2\]"),
    (_set("epoch", -1), r"field 'epoch' is -1; expected an integer in \[1, 2\]"),
    (_set("epoch", 0), r"field 'epoch' is 0; expected an integer in \[1, 2\]"),
    (_set("epoch", 3), r"field 'epoch' is 3; expected an integer in \[1, 2\]"),
    (
        _set("epoch", 1),
        r"field 'early_stopping\.best_epoch\[0\]' is 2; expected an integer in \[1, 1\]",
    ),
    (_set("step_count", -4), r"field 'step_count' is -4; expected an integer in \[2, 9007"),
    (_set("step_count", "4"), r"field 'step_count' is '4'; expected an integer"),
    (_set("step_count", 2**60), r"field 'step_count' is 1152921504606846976; expected an int"),
    (_set("epochs_run", 2), r"field 'epochs_run' is 2; expected a list of epoch counts"),
    (_set("epochs_run", [2, 2]), r"field 'epochs_run' is a list of 2 items; expected 1 counts"),
    (_set("epochs_run", [-1]), r"field 'epochs_run\[0\]' is -1; expected an integer in \[1, 2\]"),
    (_set("epochs_run", [1]), r"'epochs_run\[0\]' is 1; expected 2 \(train_config\.epochs: the"),
    (_set("early_stopping", None), r"field 'early_stopping' is None; expected the rule's state"),
    (_set("early_stopping", [1]), r"field 'early_stopping' is a list of 1 items; expected a map"),
    (_nested("early_stopping", "best", [0.5, 0.5]), r"'early_stopping\.best' is a list of 2 it"),
    (_nested("early_stopping", "stopped", "no"), r"'early_stopping\.stopped' is 'no'; expected"),
    (_nested("early_stopping", "best", 0, "low"), r"'early_stopping\.best\[0\]' is 'low'; exp"),
    (_nested("early_stopping", "best", 0, -1.0), r"'early_stopping\.best\[0\]' is -1\.0; expected"),
    (_nested("early_stopping", "best", 0, math.inf), r"best\[0\]' is inf; expected a number ≥ 0"),
    (_nested("early_stopping", "best_epoch", 0, 3), r"'early_stopping\.best_epoch\[0\]' is 3"),
    (_nested("early_stopping", "best_epoch", 0, 0), r"'early_stopping\.best_epoch\[0\]' is 0"),
    (_nested("early_stopping", "best_epoch", 0, None), r"'early_stopping\.best\[0\]' is [\d.]+; "),
    (_nested("early_stopping", "bad_epochs", 0, -1), r"'early_stopping\.bad_epochs\[0\]' is -1"),
    (_nested("early_stopping", "bad_epochs", 0, 9), r"'early_stopping\.bad_epochs\[0\]' is 9"),
    (_nested("early_stopping", "stopped", 0, 1), r"'early_stopping\.stopped\[0\]' is 1; expected"),
    (_nested("early_stopping", "stopped", 0, True), r"'early_stopping\.bad_epochs\[0\]' is 0; exp"),
    (
        lambda document: document.update(
            train_config={**document["train_config"], "epochs": 4},
            epochs_run=[4],
            early_stopping={**document["early_stopping"], "stopped": [True]},
        ),
        r"field 'epochs_run\[0\]' is 4; expected at most 2 \(the member stopped early\)",
    ),
    (
        _nested("train_config", "x" * 2000, 1),
        r"field 'train_config\.x{60}' is 'x{40}\\u2026'; expected a string",
    ),
    (_nested("early_stopping", "bad_epochs", 0, 1), r"'early_stopping\.bad_epochs\[0\]' is 1; exp"),
    (_nested("train_config", "patience", None), r"'early_stopping' is a mapping of 4 entries; "),
    (_nested("train_config", "restore_best", False), r"unexpected tensor\(s\) \['best\.0'"),
    (_nested("train_config", "optimizer", "sgd"), r"unexpected tensor\(s\) \['second_moments\.0"),
]


@pytest.mark.parametrize(("change", "message"), DAMAGED_FIELDS)
def test_damaged_fields_are_one_error_before_any_tensor_is_read(
    checkpoint, no_tensor_read, change, message
):
    _rewrite(checkpoint, change)
    with pytest.raises(ModelFileError, match=rf"^{checkpoint}: .*{message}") as caught:
        _train(checkpoint, 5, resume=True)
    assert "\n" not in str(caught.value)


def test_the_header_is_read_against_its_own_fields_without_a_run(checkpoint, no_tensor_read):
    header = schema.read_batched_checkpoint_header(checkpoint)
    assert header.members == (("A", 0),) and header.model_config == CONFIG
    assert header.epoch == 2 and header.step_count == 4 and header.dtype == torch.float32
    assert header.train_config == _config(2)
    assert header.early_stopping["best_epoch"] == [2] and header.has_best
    assert checkpoint_progress(checkpoint) == (2, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda tensors: tensors.update({"parameters.0": torch.zeros(1, 8, 4)}),
            r"tensor 'parameters\.0' is F32 of shape \(1, 8, 4\); expected F32 of shape "
            r"\(1, 7, 4\)",
        ),
        (
            lambda tensors: tensors.update(
                {"parameters.1": torch.zeros(1, 7, dtype=torch.float64)}
            ),
            r"tensor 'parameters\.1' is F64 of shape \(1, 7\); expected F32 of shape \(1, 7\)",
        ),
        (
            lambda tensors: tensors.update({"second_moments.3": torch.zeros(3)}),
            r"tensor 'second_moments\.3' is F32 of shape \(3,\); expected F32 of shape \(1, 3\)",
        ),
        (
            lambda tensors: tensors.update({"history.val_loss": torch.zeros(1, 3).double()}),
            r"tensor 'history\.val_loss' is F64 of shape \(1, 3\); expected F64 of shape \(1, 2\)",
        ),
        (
            lambda tensors: tensors.pop("first_moments.2"),
            r"lacks tensor 'first_moments\.2' \(F32 of shape \(1, 3, 7\), from fields",
        ),
        (
            lambda tensors: tensors.update({"extra": torch.zeros(1)}),
            r"1 unexpected tensor\(s\) \['extra'\]; a checkpoint of this network holds",
        ),
        (
            lambda tensors: tensors.update(
                {f"parameters.{i}": torch.zeros(1) for i in range(4, 999)}
            ),
            r"995 unexpected tensor\(s\) \['parameters\.10', 'parameters\.100'",
        ),
    ],
)
def test_tensors_of_another_shape_dtype_or_name_are_refused_before_reading(
    checkpoint, no_tensor_read, change, message
):
    _rewrite(checkpoint, change_tensors=change)
    with pytest.raises(ModelFileError, match=rf"^{checkpoint}: {message}"):
        _train(checkpoint, 5, resume=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: t["parameters.0"].__setitem__((0, 0, 0), math.nan),
            r"tensor 'parameters\.0' holds NaN or infinite values; a resumable checkpoint holds",
        ),
        (
            lambda t: t["best.3"].__setitem__((0, 1), math.inf),
            r"tensor 'best\.3' holds NaN or infinite values",
        ),
        (
            lambda t: t["first_moments.1"].__setitem__((0, 1), -math.inf),
            r"tensor 'first_moments\.1' holds NaN or infinite values",
        ),
        (
            lambda t: t["second_moments.2"].__setitem__((0, 0, 0), -1e-3),
            r"tensor 'second_moments\.2' holds negative values; second moments are ≥ 0",
        ),
        (
            lambda t: t["history.train_accuracy"].__setitem__((0, 1), math.nan),
            r"tensor 'history\.train_accuracy' holds values outside \[0, 1\] \(or NaN\)",
        ),
        (
            lambda t: t["history.val_accuracy"].__setitem__((0, 0), 1.5),
            r"tensor 'history\.val_accuracy' holds values outside \[0, 1\]",
        ),
        (
            lambda t: t["history.train_loss"].__setitem__((0, 0), -0.1),
            r"tensor 'history\.train_loss' holds negative values; expected losses ≥ 0",
        ),
        (
            lambda t: t["history.val_loss"].__setitem__((0, 1), 0.123),
            r"field 'early_stopping\.best\[0\]' is [\d.]+; expected the validation_loss of its "
            r"best epoch 2 \(0\.123\)",
        ),
    ],
)
def test_tensor_values_are_range_checked(checkpoint, change, message):
    _rewrite(checkpoint, change_tensors=change)
    with pytest.raises(ModelFileError, match=rf"^{checkpoint}: {message}"):
        _train(checkpoint, 5, resume=True)


def test_losses_may_be_nan_or_infinite_a_diverged_member(checkpoint):
    """NaN and +inf losses are what a diverged member of an ensemble records: not refused."""
    _rewrite(
        checkpoint,
        change_tensors=lambda t: t["history.train_loss"].copy_(
            torch.tensor([[math.nan, math.inf]])
        ),
    )
    header = schema.read_batched_checkpoint_header(checkpoint)
    run = schema.BatchedRun(torch.float32, 5, 2, has_validation=True)
    loaded = schema.load_batched_checkpoint(checkpoint, header, run)
    assert math.isnan(loaded.histories["train_loss"][0, 0])


def test_a_state_that_became_non_finite_is_never_written(checkpoint):
    """A finite but huge first moment (a hand-edited file) sends a bias to infinity while tanh
    keeps the loss finite: the checkpoint of that epoch is refused, the last sound one stays."""
    _rewrite(checkpoint, change_tensors=lambda t: t["first_moments.1"].__setitem__((0, 0), 1e38))
    with pytest.raises(
        TrainingDiverged,
        match=r"^training diverged at epoch \d \(A seed 0\): the weights or the optimizer state "
        r"became NaN or infinite; lower the learning rate \(--lr\)",
    ) as caught:
        _train(checkpoint, 9, resume=True)
    diverged_at = int(str(caught.value).split()[4])
    header = schema.read_batched_checkpoint_header(checkpoint)
    assert 2 <= header.epoch == diverged_at - 1
    run = schema.BatchedRun(torch.float32, 9, 2, has_validation=True)
    loaded = schema.load_batched_checkpoint(checkpoint, header, run)  # finite: it loads
    assert all(bool(tensor.isfinite().all()) for tensor in loaded.parameters)


def test_validation_histories_are_nan_exactly_without_validation_rows(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _train(path, 2, validation=False, monitor="train_loss")
    _rewrite(path, change_tensors=lambda t: t["history.val_loss"].fill_(0.5))
    with pytest.raises(ModelFileError, match=r"'history\.val_loss' holds numbers; expected NaN"):
        _train(path, 4, resume=True, validation=False, monitor="train_loss")


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (
            schema.BatchedRun(torch.float64, 5, 2, True),
            r"field 'dtype' is 'float32'; expected 'float64' \(this run's parameters\)",
        ),
        (
            schema.BatchedRun(torch.float32, 1, 2, True),
            r"cannot resume, the checkpoint has run 2 epochs, more than the 1 this run asks for "
            r"\(--epochs\)",
        ),
        (
            schema.BatchedRun(torch.float32, 5, 3, True),
            r"field 'step_count' is 4; expected 6 \(2 epochs × 3 batches of this run\)",
        ),
        (
            schema.BatchedRun(torch.float32, 5, 2, False),
            r"tensor 'history\.val_loss' holds numbers; expected NaN throughout",
        ),
    ],
)
def test_the_run_bounds_what_is_read(checkpoint, monkeypatch, run, message):
    header = schema.read_batched_checkpoint_header(checkpoint)
    if "history" not in message:
        monkeypatch.setattr(schema, "safetensors_load", lambda data: pytest.fail("tensors read"))
    with pytest.raises(ModelFileError, match=rf"^{checkpoint}: {message}"):
        schema.load_batched_checkpoint(checkpoint, header, run)


def test_fewer_epochs_than_the_checkpoint_ran_is_refused_not_relabelled(checkpoint):
    with pytest.raises(ModelFileError, match=r"has run 2 epochs, more than the 1 this run asks"):
        _train(checkpoint, 1, resume=True)


def test_a_checkpoint_of_another_network_data_members_or_options_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    train_model(
        get_design("A"),
        MLPConfig(4, 3, (5,)),
        _config(2),
        FEATURES,
        TARGETS,
        *VALIDATION,
        checkpoint_path=path,
    )
    with pytest.raises(ModelFileError, match=r"the checkpoint's model_config \{.*'hidden': \[5\]"):
        _train(path, 4, resume=True)
    _train(path, 2)
    with pytest.raises(
        ModelFileError,
        match=r"written for other training data \(or another split, or the same table prepared by "
        r"another softclass version\); train again without --resume",
    ):
        _train(path, 4, resume=True, features=FEATURES + 1)
    with pytest.raises(ModelFileError, match=r"the checkpoint's train_config \{.*'batch_size': 16"):
        _train(path, 4, resume=True, batch_size=8)
    _rewrite(path, _set("members", [["B", 0]]))
    with pytest.raises(ModelFileError, match=r"the checkpoint's members \[\['B', 0\]\] differs"):
        _train(path, 4, resume=True)


def test_a_float64_checkpoint_resumed_by_a_float32_run_names_the_dtype(tmp_path):
    path = tmp_path / "checkpoint.pt"
    members, settings = [Member("A", 0)], _config(2)
    train_ensemble(
        CONFIG,
        members,
        FEATURES,
        TARGETS,
        settings,
        *VALIDATION,
        torch.float64,
        checkpoint_path=path,
    )
    with pytest.raises(ModelFileError, match=r"field 'dtype' is 'float64'; expected 'float32'"):
        train_ensemble(
            CONFIG,
            members,
            FEATURES,
            TARGETS,
            _config(3),
            *VALIDATION,
            checkpoint_path=path,
            resume=True,
        )


# -- the safetensors container: sizes bounded, the data tiled, the metadata JSON -------------------


def test_bytes_after_the_last_tensor_are_refused(checkpoint, no_tensor_read):
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0" * 64)
    with pytest.raises(ModelFileError, match=r"64 bytes after the last tensor; a checkpoint's"):
        _train(checkpoint, 5, resume=True)


def test_overlapping_tensors_are_refused(checkpoint, no_tensor_read):
    raw = checkpoint.read_bytes()
    header, _, _ = _split(raw)
    (size,) = struct.unpack("<Q", raw[:8])
    body = raw[8 + size :]
    first, second = sorted(
        (name for name in header if name.startswith("history.")),
        key=lambda name: header[name]["data_offsets"],
    )[:2]
    header[second]["data_offsets"] = header[first]["data_offsets"]  # both read the same bytes
    _write_header(checkpoint, header, body)
    with pytest.raises(
        ModelFileError, match=r"data_offsets' is a list of 2 items; expected a rang"
    ):
        _train(checkpoint, 5, resume=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda entry: entry.update(shape=[1, 10**8]),
            r"'header\[history\.train_loss\]\.data_offsets' is a list of 2 items; expected a "
            r"range of 800000000 bytes",
        ),
        (
            lambda entry: entry.update(shape=[1, 10**9]),
            r"'header\[history\.train_loss\]\.shape\[1\]' is 1000000000; expected an integer in "
            r"\[0, 100000000\]",
        ),
        (
            lambda entry: entry.update(shape=[1, 1, 1, 2]),
            r"'header\[history\.train_loss\]\.shape' is a list of 4 items; expected at most 3",
        ),
        (
            lambda entry: entry.update(data_offsets=[0, 2**62]),
            r"'header\[history\.train_loss\]\.data_offsets' is a list of 2 items; expected "
            r"\[begin, end\] within",
        ),
        (
            lambda entry: entry.update(dtype="I64"),
            r"'header\[history\.train_loss\]\.dtype' is 'I64'; expected a float dtype",
        ),
    ],
)
def test_huge_declared_sizes_are_refused_from_the_header(
    checkpoint, no_tensor_read, change, message
):
    raw = checkpoint.read_bytes()
    header, _, _ = _split(raw)
    (size,) = struct.unpack("<Q", raw[:8])
    change(header["history.train_loss"])
    _write_header(checkpoint, header, raw[8 + size :])
    with pytest.raises(ModelFileError, match=rf"^{checkpoint}: field {message}"):
        _train(checkpoint, 5, resume=True)


def test_huge_declared_epochs_allocate_nothing(checkpoint, no_tensor_read):
    """10**8 epochs declared: the layout asks for (1, 10**8) histories, the file holds (1, 2)."""
    _rewrite(
        checkpoint,
        lambda document: document.update(
            epoch=10**8,
            step_count=2 * 10**8,
            epochs_run=[10**8],
            train_config={**document["train_config"], "epochs": 10**8},
            early_stopping={**document["early_stopping"], "bad_epochs": [10**8 - 2]},
        ),
    )
    # The declared epochs are past the bound on --epochs: refused from the header, nothing read.
    with pytest.raises(ModelFileError, match=r"epochs=100000000 must be at most 1,000,000"):
        _train(checkpoint, 5, resume=True)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({}, r"not a softclass checkpoint \(a safetensors file without the 'softclass_checkpoint'"),
        ({KEY: "{"}, r"field 'softclass_checkpoint' is not readable JSON \(Expecting"),
        ({KEY: "[1, 2]"}, r"field 'softclass_checkpoint' is a list of 2 items; expected a JSON ob"),
        ({KEY: "[" * 100_000}, r"field 'softclass_checkpoint' is not readable JSON"),
        ({KEY: "9" * 5000}, r"field 'softclass_checkpoint' is not readable JSON \(Exceeds"),
    ],
)
def test_bad_metadata_is_refused(checkpoint, no_tensor_read, metadata, message):
    _, _, tensors = _split(checkpoint.read_bytes())
    checkpoint.write_bytes(safetensors_save(tensors, metadata=metadata))
    with pytest.raises(ModelFileError, match=rf"^{checkpoint}: {message}"):
        _train(checkpoint, 5, resume=True)


def test_a_header_over_the_limit_is_refused_unread(checkpoint, no_tensor_read):
    _, document, tensors = _split(checkpoint.read_bytes())
    checkpoint.write_bytes(
        safetensors_save(tensors, metadata={KEY: json.dumps(document), "pad": "x" * (2 << 20)})
    )
    with pytest.raises(ModelFileError, match=r"header length \d+ is over the 1 MiB limit"):
        _train(checkpoint, 5, resume=True)


def test_a_model_weights_file_as_checkpoint_is_named(tmp_path, no_tensor_read):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(safetensors_save({"layers.0.weight": torch.zeros(7, 4)}))
    with pytest.raises(ModelFileError, match=r"without the 'softclass_checkpoint' metadata; a mo"):
        _train(path, 5, resume=True)


def test_a_truncated_checkpoint_is_refused(checkpoint, good_checkpoint, no_tensor_read):
    for size, message in (
        (len(good_checkpoint) - 30, r"data_offsets' is a list of 2 items; expected \[begin, end\]"),
        (len(good_checkpoint) // 2, r"header length \d+ is over the 1 MiB limit or past the end"),
        (100, r"header length \d+ is over the 1 MiB limit or past the end of the 100-byte file"),
        (5, r"not a softclass checkpoint \(neither the safetensors file"),
        (0, r"not a softclass checkpoint \(neither the safetensors file"),
    ):
        checkpoint.write_bytes(good_checkpoint[:size])
        with pytest.raises(ModelFileError, match=rf"^{checkpoint}: .*{message}"):
            _train(checkpoint, 5, resume=True)


def test_a_file_changed_after_its_header_was_checked_is_refused(checkpoint, monkeypatch):
    header = schema.read_batched_checkpoint_header(checkpoint)
    good = checkpoint.read_bytes()
    run = schema.BatchedRun(torch.float32, 5, 2, True)
    _rewrite(checkpoint, change_tensors=lambda t: t.update({"best.0": torch.zeros(1, 4, 7)}))
    assert len(checkpoint.read_bytes()) == len(good)  # the same size, another shape
    with pytest.raises(ModelFileError, match=r"changed while it was read \(its tensors no longer"):
        schema.load_batched_checkpoint(checkpoint, header, run)
    checkpoint.write_bytes(good + bytes(2 << 20))
    with pytest.raises(ModelFileError, match=r"changed while it was read \(larger than its header"):
        schema.load_batched_checkpoint(checkpoint, header, run)
    checkpoint.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelFileError, match=r"not a readable safetensors file \("):
        schema.load_batched_checkpoint(checkpoint, header, run)
    checkpoint.unlink()
    with pytest.raises(ModelFileError, match=r"cannot read the checkpoint \(No such file"):
        schema.load_batched_checkpoint(checkpoint, header, run)


# -- torch.save archives: the checkpoints of earlier versions, never unpickled ---------------------


@pytest.mark.parametrize(
    "state",
    [{"format": 1, "engine": "batched", "epoch": 3}, {"format": 2, "design": "A", "epoch": 3}],
    ids=["batched format 1", "autograd Trainer format 2"],
)
def test_an_old_checkpoint_says_to_retrain_or_use_the_older_softclass(
    checkpoint, no_unpickling, state
):
    torch.save(state, checkpoint)
    message = (
        r"a checkpoint of an earlier softclass \(format 1 or 2, a torch\.save archive\); this "
        r"softclass reads its safetensors checkpoints \(format 2\) only: train again without "
        r"--resume, or finish the run with the softclass that wrote it"
    )
    with pytest.raises(ModelFileError, match=rf"^{checkpoint}: {message}$"):
        _train(checkpoint, 5, resume=True)
    with pytest.raises(ModelFileError, match=message):
        checkpoint_progress(checkpoint)


def test_the_autograd_and_the_batched_backends_resume_each_others_checkpoints(tmp_path):
    """One format: the autograd reference writes M = 1, and either backend resumes it."""
    path = tmp_path / "checkpoint.pt"
    fit(
        get_design("A"),
        CONFIG,
        FEATURES,
        TARGETS,
        *VALIDATION,
        config=_config(2),
        checkpoint_path=path,
    )
    assert checkpoint_progress(path) == (2, 2)
    header = schema.read_batched_checkpoint_header(path)
    assert header.members == (("A", 0),) and header.dtype == torch.float32
    resumed = _train(path, 4, resume=True)
    assert resumed.history.epochs == 4 and checkpoint_progress(path) == (4, 4)
    _train(path, 2)
    again = fit(
        get_design("A"),
        CONFIG,
        FEATURES,
        TARGETS,
        *VALIDATION,
        config=_config(4),
        checkpoint_path=path,
        resume=True,
    )
    assert again.history.epochs == 4


def test_a_pickle_with_code_in_an_archive_is_refused_not_run(checkpoint, tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (marker.touch, ())

    torch.save({"engine": "batched", "payload": Payload()}, checkpoint)
    with pytest.raises(ModelFileError, match=r"a checkpoint of an earlier softclass"):
        _train(checkpoint, 5, resume=True)
    assert not marker.exists()


def test_a_format_2_checkpoint_is_never_unpickled(checkpoint, no_unpickling):
    assert _train(checkpoint, 3, resume=True).history.epochs == 3


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(ModelFileError, match=r"no checkpoint to resume from \(the file does not"):
        _train(tmp_path / "none.pt", 2, resume=True)


def test_an_integer_dtype_cannot_be_written():
    header = schema.BatchedCheckpointHeader(
        (("A", 0),), CONFIG, _config(1), "0" * 64, torch.int64, 1, 2, (1,), None
    )
    tensors = schema.BatchedCheckpointTensors([], [], [], None, {})
    with pytest.raises(ConfigError, match=r"checkpoints hold parameters of dtype float16, bfloat"):
        schema.encode_batched_checkpoint(header, tensors)


# -- the command line: exit 2, one line naming the file and the field ------------------------------


@pytest.fixture
def run(monkeypatch, capsys):
    def invoke(*args):
        monkeypatch.setattr(sys, "argv", ["softclass", *map(str, args)])
        try:
            cli.main()
            code = 0
        except SystemExit as stop:
            code = stop.code or 0
        return code, capsys.readouterr().err

    return invoke


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("epoch", -1), r"field 'epoch' is -1; expected an integer in \[1, 2\]"),
        (_set("members", [["A", "x"]]), r"field 'members\[0\]\[1\]' is 'x'; expected an integer"),
        (_nested("model_config", "hidden", [1e30]), r"'model_config\.hidden\[0\]' is 1e\+30"),
    ],
)
def test_train_resume_of_a_damaged_checkpoint_is_exit_2_and_one_line(
    run, tmp_path, change, message
):
    out = tmp_path / "model"
    iris = bundled_path("iris")
    assert run("train", iris, "--out", out, "--epochs", "2")[0] == 0
    checkpoint = out / "checkpoint.pt"
    assert checkpoint_progress(checkpoint) == (2, 2)
    _rewrite(checkpoint, change)
    code, err = run("train", iris, "--out", out, "--resume", "--epochs", "3")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.strip().startswith(f"error: {checkpoint}: ")
    assert __import__("re").search(message, err), err


# -- resume: the weights of an uninterrupted run, members stopping early across the checkpoint -----


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_an_ensemble_resumes_to_the_uninterrupted_weights_with_members_stopped(tmp_path, backend):
    members = [Member(design, seed) for design in ("A", "C") for seed in (0, 3)]

    def settings(epochs):
        return _config(
            epochs, patience=3, monitor="validation_accuracy", learning_rate=0.003, backend=backend
        )

    def run(epochs, **checkpointing):
        return train_ensemble(
            CONFIG, members, FEATURES, TARGETS, settings(epochs), *VALIDATION, **checkpointing
        )

    whole = run(30)
    assert min(whole.epochs_run) < max(whole.epochs_run) < 30, "members must stop apart"
    path = tmp_path / "checkpoint.pt"
    middle = min(whole.epochs_run) + 1  # some members stopped, others still training
    run(middle, checkpoint_path=path)
    stopped = schema.read_batched_checkpoint_header(path).early_stopping["stopped"]
    assert any(stopped) and not all(stopped)
    resumed = run(30, checkpoint_path=path, resume=True)
    for got, want in zip(resumed.network.parameters(), whole.network.parameters(), strict=True):
        assert torch.equal(got, want)
    assert resumed.epochs_run == whole.epochs_run and resumed.best_epoch == whole.best_epoch
    assert torch.equal(
        torch.from_numpy(resumed.val_loss).nan_to_num(-1),
        torch.from_numpy(whole.val_loss).nan_to_num(-1),
    )


# -- fuzzing: a mutated checkpoint resumes or is refused with one line -----------------------------


def _resumes_or_refuses(path):
    try:
        result = _train(path, 3, resume=True)
    except ModelFileError as error:
        assert "\n" not in str(error) and str(error).startswith(f"{path}: ")
    except TrainingDiverged as error:  # finite but hostile weights or moments, e.g. 1e30
        assert "\n" not in str(error) and "lower the learning rate" in str(error)
    else:
        assert result.history.epochs == 3
        assert all(torch.isfinite(tensor).all() for tensor in result.model.parameters())


@FUZZ
@given(data=st.data())
def test_fuzzed_header_fields_resume_or_are_refused(checkpoint, good_checkpoint, data):
    checkpoint.write_bytes(good_checkpoint)
    _, document, tensors = _split(good_checkpoint)
    path = data.draw(st.sampled_from(list(json_paths(document))))
    _write(checkpoint, replace_at(document, path, data.draw(JSON_VALUES)), tensors)
    _resumes_or_refuses(checkpoint)


@FUZZ
@given(data=st.data())
def test_fuzzed_safetensors_headers_resume_or_are_refused(checkpoint, good_checkpoint, data):
    raw = good_checkpoint
    header, _, _ = _split(raw)
    (size,) = struct.unpack("<Q", raw[:8])
    tensor_paths = [path for path in json_paths(header) if path[:1] != ("__metadata__",)]
    path = data.draw(st.sampled_from(tensor_paths))
    _write_header(checkpoint, replace_at(header, path, data.draw(JSON_VALUES)), raw[8 + size :])
    _resumes_or_refuses(checkpoint)


@FUZZ
@given(data=st.data())
def test_fuzzed_bytes_resume_or_are_refused(checkpoint, good_checkpoint, data):
    raw = bytearray(good_checkpoint)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    checkpoint.write_bytes(bytes(raw))
    _resumes_or_refuses(checkpoint)


@FUZZ
@given(data=st.data())
def test_fuzzed_tensor_values_resume_or_are_refused(checkpoint, good_checkpoint, data):
    _, document, tensors = _split(good_checkpoint)
    name = data.draw(st.sampled_from(sorted(tensors)))
    flat = tensors[name].view(-1)
    index = data.draw(st.integers(0, flat.numel() - 1))
    flat[index] = data.draw(st.floats(allow_nan=True, allow_infinity=True, width=32))
    _write(checkpoint, document, tensors)
    _resumes_or_refuses(checkpoint)
