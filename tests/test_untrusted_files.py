"""Model directories and checkpoints as untrusted input (issue 14): every damaged or hostile file
is one ModelFileError naming the file, the field and what was expected — before any tensor is
allocated from it, never a traceback, a hang or code execution. The hostile files are made here.
"""

import json
import struct
import sys
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from json_fuzz import FUZZ, JSON_VALUES, json_paths, replace_at

from softclass import cli
from softclass.data import Recipe, bundled_path, load_bundled
from softclass.errors import ModelFileError, TrainingDiverged
from softclass.jobs import store
from softclass.jobs.store import METADATA_FILE, WEIGHTS_FILE, load_model, save_model
from softclass.mlp.designs import get_design
from softclass.mlp.model import MAX_HIDDEN_LAYERS, MLPConfig, build_mlp
from softclass.training import schema
from softclass.training.backends.autograd import fit
from softclass.training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = MLPConfig(4, 3)


@pytest.fixture(scope="module")
def iris_recipe():
    return Recipe.fit(load_bundled("iris"))


@pytest.fixture
def model_dir(tmp_path, iris_recipe):
    directory = tmp_path / "model"
    save_model(
        directory, build_mlp(CONFIG, 1), get_design("A"), iris_recipe, TrainConfig(), {"epochs": 1}
    )
    return directory


@pytest.fixture
def no_network_built(monkeypatch):
    """Fail the test if load_model gets as far as building the network (allocating weights)."""

    def refuse(config):
        raise AssertionError(f"a network {config} was built from a file that should be refused")

    monkeypatch.setattr(store, "MLP", refuse)


def _edit(directory, change):
    path = directory / METADATA_FILE
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))


# -- model.json ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda m: m["model_config"].update(hidden=[1e30]),
            r"field 'model_config\.hidden\[0\]' is 1e\+30; expected an integer ≥ 1",
        ),
        (
            lambda m: m["model_config"].update(hidden=[1] * 200_000),
            rf"field 'model_config\.hidden' is a list of 200000 items; expected at most "
            rf"{MAX_HIDDEN_LAYERS} hidden layer widths",
        ),
        (
            lambda m: m["model_config"].update(hidden=[200_000_000]),
            r"field 'model_config': a 4-200000000-3 network has 1,600,000,003 parameters: at most "
            r"100,000,000 are allowed",
        ),
        (
            lambda m: m["model_config"].update(hidden=[10**400]),
            r"field 'model_config': a 4-about 10\^400-3 network has about 10\^400 parameters",
        ),
        (
            lambda m: m["model_config"].update(hidden=[True]),
            r"field 'model_config\.hidden\[0\]' is True; expected an integer",
        ),
        (
            lambda m: m["model_config"].update(n_features="4"),
            r"field 'model_config\.n_features' is '4'; expected an integer ≥ 1",
        ),
        (
            lambda m: m["model_config"].update(extra=1),
            r"field 'model_config' has unknown key\(s\) \['extra'\]",
        ),
        (lambda m: m.update(format_version=True), r"field 'format_version' is True; this"),
        (lambda m: m.update(design=["A"]), r"field 'design' is a list of 1 items; expected a str"),
        (lambda m: m.update(classes="abc"), r"field 'classes' is 'abc'; expected a list"),
        (
            lambda m: m.update(classes=["a", "a", "b"]),
            r"field 'classes' is a list of 3 items; expected distinct class names",
        ),
        (lambda m: m.update(classes=[1, 2, 3]), r"field 'classes\[0\]' is 1; expected a string"),
        (lambda m: m.update(recipe=[]), r"field 'recipe' is a list of 0 items; expected a mapping"),
        (lambda m: m.update(history=None), r"field 'history' is None; expected a mapping"),
        (lambda m: m.update(train_config="fast"), r"field 'train_config' is 'fast'; expected"),
        (lambda m: m.pop("softclass_version"), r"missing field 'softclass_version'"),
    ],
)
def test_hostile_model_json_is_refused_before_the_network_is_built(
    model_dir, no_network_built, change, message
):
    _edit(model_dir, change)
    with pytest.raises(ModelFileError, match=f"model.json: {message}"):
        load_model(model_dir)


def test_json_nested_too_deeply_or_too_large_is_refused(model_dir, monkeypatch):
    (model_dir / METADATA_FILE).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelFileError, match=r"model\.json: not readable JSON"):
        load_model(model_dir)
    (model_dir / METADATA_FILE).write_bytes(b"\xff\xfe{}")
    with pytest.raises(ModelFileError, match=r"model\.json: not readable JSON \(not UTF-8"):
        load_model(model_dir)
    monkeypatch.setattr(schema, "MAX_JSON_BYTES", 100)
    (model_dir / METADATA_FILE).write_text(json.dumps({"padding": "x" * 200}))
    with pytest.raises(ModelFileError, match=r"model\.json: larger than 0 MiB; not a model\.json"):
        load_model(model_dir)


# -- the safetensors header ------------------------------------------------------------------------


def _write_safetensors(path, header, data=b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_weights_of_another_network_are_refused_from_the_header(
    model_dir, iris_recipe, tmp_path, monkeypatch
):
    other = tmp_path / "other"
    save_model(
        other,
        build_mlp(MLPConfig(4, 3, (9,)), 0),
        get_design("A"),
        iris_recipe,
        TrainConfig(),
        {},
    )
    (model_dir / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    monkeypatch.setattr(store, "load_file", lambda path: pytest.fail("tensors were read"))
    with pytest.raises(ModelFileError, match=r"do not fit the network in model\.json .*wrong"):
        load_model(model_dir)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            {"layers.0.weight": {"dtype": "F32", "shape": [20_000_000, 4], "data_offsets": [0, 4]}},
            r"header\[layers\.0\.weight\]\.data_offsets' is a list of 2 items; expected a "
            r"range of 320000000 bytes",
        ),
        (
            {"layers.0.weight": {"dtype": "F32", "shape": [7, 4], "data_offsets": [0, 10**12]}},
            r"header\[layers\.0\.weight\]\.data_offsets' is a list of 2 items; expected "
            r"\[begin, end\] within 0\.\.112",
        ),
        (
            {"layers.0.weight": {"dtype": "I64", "shape": [7, 4], "data_offsets": [0, 112]}},
            r"header\[layers\.0\.weight\]\.dtype' is 'I64'; expected a float dtype",
        ),
        (
            {"layers.0.weight": {"dtype": "F32", "shape": [-7, 4], "data_offsets": [0, 112]}},
            r"header\[layers\.0\.weight\]\.shape\[0\]' is -7; expected an integer in "
            r"\[0, 100000000\]",
        ),
        (
            {"layers.0.weight": {"dtype": "F32", "shape": [1] * 9, "data_offsets": [0, 4]}},
            r"header\[layers\.0\.weight\]\.shape' is a list of 9 items; expected at most 2 "
            r"dimensions",
        ),
        ({"layers.0.weight": "F32"}, r"header\[layers\.0\.weight\]' is 'F32'; expected"),
        ({"__metadata__": {"format": 1}}, r"__metadata__' is a mapping of 1 entries"),
        ([1, 2], r"header' is a list of 2 items; expected a JSON object"),
    ],
)
def test_hostile_safetensors_headers_are_refused(model_dir, no_network_built, header, message):
    _write_safetensors(model_dir / WEIGHTS_FILE, header, b"\0" * 112)
    with pytest.raises(ModelFileError, match=rf"model\.safetensors: field '{message}"):
        load_model(model_dir)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"not a safetensors file \(0 bytes"),
        (struct.pack("<Q", 2**63) + b"{}", r"header length 9223372036854775808 is over the 1 MiB"),
        (
            struct.pack("<Q", 50) + b"{}",
            r"header length 50 is over the 1 MiB limit or past the end",
        ),
        (struct.pack("<Q", 4) + b"{{{{", r"the safetensors header is not JSON"),
    ],
)
def test_truncated_or_garbled_safetensors_files_are_refused(
    model_dir, no_network_built, content, message
):
    (model_dir / WEIGHTS_FILE).write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        load_model(model_dir)


def test_non_finite_weights_are_refused(model_dir):
    from safetensors.torch import load_file, save_file

    state = load_file(str(model_dir / WEIGHTS_FILE))
    state["layers.2.bias"][1] = float("nan")
    save_file(state, str(model_dir / WEIGHTS_FILE))
    with pytest.raises(ModelFileError, match=r"tensors \['layers\.2\.bias'\] hold NaN or inf"):
        load_model(model_dir)


# -- checkpoints -----------------------------------------------------------------------------------


def _blobs(n_rows=30):
    generator = torch.Generator().manual_seed(0)
    targets = torch.arange(n_rows) % 3
    features = torch.nn.functional.one_hot(targets, 4).float() * 2
    return features + 0.3 * torch.randn(n_rows, 4, generator=generator), targets


def _train(path, epochs, optimizer="adam", resume=False):
    features, targets = _blobs()
    return fit(
        get_design("A"),
        CONFIG,
        features,
        targets,
        features[:9],
        targets[:9],
        config=TrainConfig(epochs=epochs, optimizer=optimizer, patience=5),
        checkpoint_path=path,
        resume=resume,
    )


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint") / "checkpoint.pt"
    _train(path, 2)
    return path.read_bytes()


def test_a_good_checkpoint_still_resumes(tmp_path, good_checkpoint):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(good_checkpoint)
    assert _train(path, 3, resume=True).history.epochs == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n",
            r"not a softclass checkpoint \(neither the safetensors file",
        ),
        (b"epoch 3 of 10, loss 0.21\n", r"not a softclass checkpoint"),
        (b"", r"not a softclass checkpoint"),
        (b"PK\x03\x04" + b"\0" * 40, r"a checkpoint of an earlier softclass"),
    ],
)
def test_text_and_garbage_as_checkpoint_are_refused(tmp_path, monkeypatch, content, message):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load ran"))
    with pytest.raises(ModelFileError, match=message) as caught:
        _train(path, 3, resume=True)
    assert "\n" not in str(caught.value)


def test_a_truncated_checkpoint_is_refused(tmp_path, good_checkpoint):
    path = tmp_path / "checkpoint.pt"
    for size in (len(good_checkpoint) // 2, len(good_checkpoint) - 30):
        path.write_bytes(good_checkpoint[:size])
        with pytest.raises(ModelFileError, match=r"checkpoint\.pt: ") as caught:
            _train(path, 3, resume=True)
        assert "\n" not in str(caught.value)


# -- the command line: exit 2, one line, fast ------------------------------------------------------


@pytest.fixture
def run(monkeypatch, capsys):
    def invoke(*args):
        monkeypatch.setattr(sys, "argv", ["softclass", *map(str, args)])
        started = time.perf_counter()
        try:
            cli.main()
            code = 0
        except SystemExit as stop:
            code = stop.code or 0
        captured = capsys.readouterr()
        return code, captured.err, time.perf_counter() - started

    return invoke


@pytest.mark.parametrize(
    ("hidden", "message"),
    [
        ([1e30], r"'model_config\.hidden\[0\]' is 1e\+30; expected an integer ≥ 1"),
        ([1] * 200_000, r"is a list of 200000 items; expected at most 100 hidden layer widths"),
        ([200_000_000], r"has 1,600,000,003 parameters: at most 100,000,000 are allowed"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "check"])
def test_the_issue_model_json_cases_end_in_one_line_exit_2(
    run, model_dir, no_network_built, command, hidden, message
):
    _edit(model_dir, lambda m: m["model_config"].update(hidden=hidden))
    code, err, _seconds = run(command, model_dir, bundled_path("iris"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: ") and str(model_dir / METADATA_FILE) in err
    assert __import__("re").search(message, err), err


def test_etc_passwd_as_checkpoint_is_one_clear_line(run, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    code, err, _seconds = run(
        "train", bundled_path("iris"), "--out", out, "--resume", "--epochs", "1"
    )
    assert code == 2
    assert "list index out of range" not in err and len(err.strip().splitlines()) == 1
    assert (
        "checkpoint.pt: not a softclass checkpoint (neither the safetensors file of the batched "
        "engine nor the zip archive torch.save writes)" in err
    )


# -- fuzzing: mutated files are either read or refused with ModelFileError ------------------------


@pytest.fixture
def pristine(model_dir):
    """Restore the model directory's files (hypothesis runs every example in one fixture)."""
    originals = {name: (model_dir / name).read_bytes() for name in (METADATA_FILE, WEIGHTS_FILE)}

    def restore():
        for name, content in originals.items():
            (model_dir / name).write_bytes(content)
        return model_dir

    return restore


@FUZZ
@given(data=st.data())
def test_fuzzed_model_json_is_read_or_refused(pristine, data):
    model_dir = pristine()
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    paths = list(json_paths(metadata))
    path = data.draw(st.sampled_from(paths))
    mutated = replace_at(json.loads(json.dumps(metadata)), path, data.draw(JSON_VALUES))
    (model_dir / METADATA_FILE).write_text(json.dumps(mutated))
    try:
        saved = load_model(model_dir)
    except ModelFileError as error:
        assert "\n" not in str(error) and str(model_dir) in str(error)
    else:
        assert saved.model_config.n_parameters <= 10_000


@FUZZ
@given(data=st.data())
def test_fuzzed_safetensors_header_is_read_or_refused(pristine, data):
    model_dir = pristine()
    weights = model_dir / WEIGHTS_FILE
    raw = weights.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    body = raw[8 + size :]
    if data.draw(st.booleans()):
        path = data.draw(st.sampled_from(list(json_paths(header))))
        header = replace_at(header, path, data.draw(JSON_VALUES))
        text = json.dumps(header).encode()
        weights.write_bytes(struct.pack("<Q", len(text)) + text + body)
    else:  # flip bytes anywhere in the header or its length
        position = data.draw(st.integers(0, 8 + size - 1))
        flipped = bytearray(raw)
        flipped[position] ^= data.draw(st.integers(1, 255))
        weights.write_bytes(bytes(flipped))
    try:
        load_model(model_dir)
    except ModelFileError as error:
        assert "\n" not in str(error) and str(weights) in str(error)


@FUZZ
@given(data=st.data())
def test_fuzzed_checkpoints_are_read_or_refused(tmp_path, good_checkpoint, data):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(good_checkpoint)
    raw = bytearray(good_checkpoint)  # flip bytes anywhere in the file
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    path.write_bytes(bytes(raw))
    try:
        _train(path, 3, resume=True)
    except ModelFileError as error:
        assert "\n" not in str(error) and str(path) in str(error)
    except TrainingDiverged as error:  # a flipped exponent bit in a weight or moment is a sound
        assert "\n" not in str(error) and "training diverged at epoch 3" in str(error)  # file
