"""Model directories and checkpoints as untrusted input (issue 14): every damaged or hostile file
is one ModelFileError naming the file, the field and what was expected — before any tensor is
allocated from it, never a traceback, a hang or code execution. The hostile files are made here.
"""

import json
import math
import struct
import sys
import time
import zipfile

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
from softclass.training.trainer import TrainConfig, fit, load_checkpoint_file

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


def _set(key, value):
    return lambda state: state.update({key: value})


def _nested(*keys_and_value):
    *keys, last, value = keys_and_value

    def change(state):
        target = state
        for key in keys:
            target = target[key]
        target[last] = value

    return change


W = "layers.0.weight"  # a parameter of CONFIG: shape (7, 4)

# The kinds of hand-damaged checkpoint.pt of issue 14: each is a field of the wrong type or range.
DAMAGED = [
    (_set("best_loss", [0.5]), r"field 'best_loss' is a list of 1 items; expected a number"),
    (_set("best_loss", "low"), r"field 'best_loss' is 'low'; expected a number"),
    (_set("best_state", "weights"), r"field 'best_state' is 'weights'; expected a mapping"),
    (_set("best_state", {"layers.0.weight": 1}), r"'best_state\[layers\.0\.weight\]' is 1;"),
    (_set("epoch", None), r"field 'epoch' is None; expected an integer in \[0, 100000000\]"),
    (_set("epoch", -1), r"field 'epoch' is -1; expected an integer"),
    (_set("epoch", 7), r"field 'history\.records' is a list of 2 items; expected 7 records"),
    (_set("optimizer", 3), r"field 'optimizer' is 3; expected a mapping"),
    (_set("optimizer", {"state": {}, "param_groups": []}), r"'optimizer' has unknown key\(s\)"),
    (lambda state: state["optimizer"].pop("step_counts"), r"'optimizer' lacks key\(s\) \['step_c"),
    (_nested("optimizer", "step_count", -1), r"'optimizer\.step_count' is -1; expected an integ"),
    (_nested("optimizer", "step_count", "6"), r"'optimizer\.step_count' is '6'; expected an int"),
    (_nested("optimizer", "step_count", True), r"'optimizer\.step_count' is True; expected an in"),
    (_nested("optimizer", "first_moments", []), r"'optimizer\.first_moments' is a list of 0 it"),
    (_nested("optimizer", "first_moments", {}), r"'optimizer\.first_moments' lacks tensor\(s\)"),
    (_nested("optimizer", "first_moments", W, torch.zeros(3)), r"moments\[layers\.0\.weight\]"),
    (_nested("optimizer", "first_moments", W, torch.zeros(4, 7)), r"expected shape \(7, 4\)"),
    (_nested("optimizer", "first_moments", W, torch.zeros(7, 4).double()), r"a float32 tensor"),
    (_nested("optimizer", "first_moments", W, [[0.0] * 4] * 7), r"is a list of 7 items; expec"),
    (_nested("optimizer", "first_moments", W, torch.full((7, 4), math.nan)), r"finite values"),
    (_nested("optimizer", "first_moments", "extra", torch.zeros(1)), r"'optimizer\.first_mom"),
    (_nested("optimizer", "second_moments", W, -torch.ones(7, 4)), r"values ≥ 0 \(squared"),
    (_nested("optimizer", "second_moments", W, torch.full((7, 4), math.inf)), r"finite values"),
    (_nested("optimizer", "step_counts", W, "one"), r"step_counts\[layers\.0\.weight\]' is 'one"),
    (_nested("optimizer", "step_counts", W, torch.ones(1)), r"expected shape \(\)"),
    (_nested("optimizer", "step_counts", W, torch.tensor(2.5)), r"is 2\.5; expected a whole num"),
    (_nested("optimizer", "step_counts", W, torch.tensor(-1.0)), r"is -1; expected a whole numb"),
    (_nested("optimizer", "step_counts", W, torch.tensor(1e9)), r"is 1e\+09; expected .*\[0, 4\]"),
    (_nested("optimizer", "step_counts", W, torch.tensor(math.nan)), r"finite values"),
    (
        _nested("train_config", "optimizer", "no-such-optimizer"),
        r"'train_config\.optimizer' is 'no-such-optimizer'; exp",
    ),
    (lambda state: state["train_config"].pop("optimizer"), r"'train_config\.optimizer' is None"),
    (_set("model_config", [4, 3]), r"field 'model_config' is a list of 2 items; expected a map"),
    (_set("model_config", "4-7-3"), r"field 'model_config' is '4-7-3'; expected a mapping"),
    (_nested("model_config", "hidden", [1e30]), r"'model_config\.hidden\[0\]' is 1e\+30"),
    (_nested("model_config", "hidden", [10**8]), r"parameters: at most 100,000,000"),
    (_set("train_config", [1, 2]), r"field 'train_config' is a list of 2 items"),
    (_set("train_config", "adam"), r"field 'train_config' is 'adam'; expected a mapping"),
    (_nested("train_config", "lr", [1]), r"field 'train_config\.lr' is a list of 1 items"),
    (_set("design", 1), r"field 'design' is 1; expected a string"),
    (_set("data_fingerprint", None), r"field 'data_fingerprint' is None; expected a SHA-256"),
    (_set("finished", "yes"), r"field 'finished' is 'yes'; expected true or false"),
    (_set("model", None), r"field 'model' is None; expected a mapping of tensor names"),
    (_set("model", {}), r"field 'model' lacks tensor\(s\) \['layers\.0\.weight'"),
    (_nested("model", "layers.0.weight", torch.zeros(7, 4, dtype=torch.int64)), r"float32"),
    (_nested("model", "layers.0.weight", [[0.0] * 4] * 7), r"is a list of 7 items; expected a"),
    (_nested("model", "extra", torch.zeros(1)), r"'model\[extra\]' is 'extra'; expected a tensor"),
    (_set("history", None), r"field 'history' is None; expected a mapping"),
    (_nested("history", "records", "all"), r"field 'history\.records' is 'all'; expected a list"),
    (_nested("history", "records", 0, None), r"'history\.records\[0\]' is None; expected a map"),
    (_nested("history", "records", 0, "train_loss", "x"), r"records\[0\]\.train_loss' is 'x'"),
    (_nested("history", "records", 0, "epoch", None), r"records\[0\]\.epoch' is None"),
    (_nested("history", "best_epoch", 9), r"'history\.best_epoch' is 9; expected an integer in"),
    (_nested("history", "stopped_early", None), r"'history\.stopped_early' is None; expected"),
    (_set("epochs_without_improvement", 1.5), r"'epochs_without_improvement' is 1\.5; expected"),
    (_set("epochs_without_improvement", None), r"'epochs_without_improvement' is None"),
    (_set("format", "2"), r"checkpoint format '2', this softclass reads 2: delete it and train"),
    (_set("format", True), r"checkpoint format True, this softclass reads 2"),
    (_set("format", 1), r"checkpoint format 1, written by an older softclass"),
    (lambda state: state.pop("history"), r"missing field\(s\) \['history'\]"),
]


@pytest.mark.parametrize(("change", "message"), DAMAGED)
def test_damaged_checkpoints_are_one_error_naming_the_field(
    tmp_path, good_checkpoint, change, message
):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(good_checkpoint)
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    with pytest.raises(ModelFileError, match=f"checkpoint.pt: .*{message}"):
        _train(path, 4, resume=True)


def test_an_archive_of_an_unknown_zip_version_is_refused(tmp_path, good_checkpoint):
    """zipfile raises NotImplementedError for a central-directory entry needing zip version 6.4."""
    raw = bytearray(good_checkpoint)
    entry = raw.index(b"PK\x01\x02")  # the first central-directory header
    raw[entry + 6 : entry + 8] = (64).to_bytes(2, "little")  # "version needed to extract"
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match=r"not a softclass checkpoint \(not the zip archive"):
        load_checkpoint_file(path)


def test_second_moments_in_an_sgd_checkpoint_are_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _train(path, 1, optimizer="sgd")
    state = torch.load(path, weights_only=True)
    assert state["optimizer"]["second_moments"] == {}
    state["optimizer"]["second_moments"] = dict(state["optimizer"]["first_moments"])
    torch.save(state, path)
    with pytest.raises(
        ModelFileError,
        match=r"'optimizer\.second_moments' is a mapping of 4 entries; expected an empty mapping",
    ):
        _train(path, 2, optimizer="sgd", resume=True)


def test_a_good_checkpoint_still_resumes(tmp_path, good_checkpoint):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(good_checkpoint)
    assert _train(path, 3, resume=True).history.epochs == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n",
            r"not a softclass checkpoint \(not the zip archive torch\.save writes\)",
        ),
        (b"epoch 3 of 10, loss 0.21\n", r"not the zip archive"),
        (b"", r"not the zip archive"),
        (b"PK\x03\x04" + b"\0" * 40, r"not the zip archive"),
    ],
)
def test_text_and_garbage_as_checkpoint_are_refused(tmp_path, content, message):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        load_checkpoint_file(path)


@pytest.mark.parametrize(
    ("pickle_bytes", "message"),
    [
        (b"\x80\x02h\x05.", r"\(KeyError: 5\)"),  # fetch of a memo slot never stored
        (b"0.", r"\(UnpicklingError: Unsupported operand 48"),  # POP: refused opcode
        (b"\x80\x02(", r"\(UnpicklingError|\(EOFError|\(ValueError"),  # cut short
    ],
)
def test_a_damaged_pickle_inside_the_archive_is_one_error(tmp_path, pickle_bytes, message):
    path = tmp_path / "checkpoint.pt"
    torch.save({"a": 1}, path)
    with zipfile.ZipFile(path) as archive:
        records = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in records.items():
            archive.writestr(name, pickle_bytes if name.endswith("data.pkl") else content)
    with pytest.raises(ModelFileError, match=rf"refused to load the checkpoint: .*{message}"):
        load_checkpoint_file(path)


def test_a_truncated_checkpoint_is_refused(tmp_path, good_checkpoint):
    path = tmp_path / "checkpoint.pt"
    for size in (len(good_checkpoint) // 2, len(good_checkpoint) - 30):
        path.write_bytes(good_checkpoint[:size])
        with pytest.raises(ModelFileError, match=r"checkpoint\.pt: not a softclass checkpoint"):
            load_checkpoint_file(path)


def test_a_compressed_checkpoint_is_refused_without_inflating_it(tmp_path, monkeypatch):
    """A checkpoint whose archive inflates to far more than its size (the issue's 2.1 MB file
    that inflated to 2 GiB) is refused from the zip directory, before torch.load."""
    path = tmp_path / "checkpoint.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data/0", "w") as entry:
            block = bytes(1 << 20)
            for _ in range(64):
                entry.write(block)
    assert path.stat().st_size < 1 << 20
    monkeypatch.setattr(schema.torch, "load", lambda *a, **k: pytest.fail("torch.load ran"))
    with pytest.raises(ModelFileError, match=r"entry 'archive/data/0' is compressed"):
        load_checkpoint_file(path)


def test_the_unpacked_size_is_bounded_by_the_network(tmp_path, good_checkpoint, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(good_checkpoint)
    monkeypatch.setattr(schema, "_CHECKPOINT_OVERHEAD_BYTES", 0)
    monkeypatch.setattr(schema.torch, "load", lambda *a, **k: pytest.fail("torch.load ran"))
    assert schema.checkpoint_byte_limit(CONFIG) == 16 * CONFIG.n_parameters
    with pytest.raises(ModelFileError, match=r"unpacks to [\d,]+ bytes; at most 944 are allowed"):
        load_checkpoint_file(path, CONFIG)


def test_too_many_archive_entries_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(12):
            archive.writestr(f"archive/data/{index}", b"")
    monkeypatch.setattr(schema, "MAX_ZIP_ENTRIES", 10)
    with pytest.raises(ModelFileError, match=r"12 archive entries; a checkpoint holds at most 10"):
        load_checkpoint_file(path)


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
    if data.draw(st.booleans()):
        state = torch.load(path, weights_only=True)
        key = data.draw(st.sampled_from(sorted(state)))
        if isinstance(state[key], dict) and state[key] and data.draw(st.booleans()):
            inner = data.draw(st.sampled_from(sorted(state[key], key=str)))
            state[key][inner] = data.draw(JSON_VALUES)
        else:
            state[key] = data.draw(JSON_VALUES)
        torch.save(state, path)
    else:  # flip bytes of the archive
        raw = bytearray(good_checkpoint)
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        path.write_bytes(bytes(raw))
    try:
        _train(path, 3, resume=True)
    except ModelFileError as error:
        assert "\n" not in str(error) and str(path) in str(error)
    except TrainingDiverged as error:  # a flipped exponent bit in a weight or moment is a sound
        assert "\n" not in str(error) and "training diverged at epoch 3" in str(error)  # file
