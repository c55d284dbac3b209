"""The options of ``compare`` and ``train``: declared once, mapped to TrainConfig by one function,
and named in errors as typed (the library keeps its own parameter names)."""

import dataclasses
import json
import pickle
import re

import pytest
import typer.main

from softclass import cli
from softclass.cli.options import _REGISTRY_NAMES, _SPECS, _as_typed
from softclass.cli.run import _resolve
from softclass.data import bundled_path
from softclass.errors import ConfigError, OptionError
from softclass.jobs.defaults import DEMONSTRATION, TABLE
from softclass.mlp.activations import ACTIVATIONS
from softclass.mlp.optimizers import OPTIMIZERS
from softclass.training.config import BACKENDS, MONITORS, TrainConfig, resolve_device

pytestmark = pytest.mark.usefixtures("one_thread")

IRIS = bundled_path("iris")
PEOPLE = bundled_path("people")
CONFIG_FIELDS = {item.name for item in dataclasses.fields(TrainConfig)}
# Per TrainConfig field: what a user types, and the value the field must then hold.
TYPED = {
    "epochs": (("--epochs", "3"), 3),
    "batch_size": (("--batch-size", "8"), 8),
    "optimizer": (("--optimizer", "adamw"), "adamw"),
    "learning_rate": (("--lr", "0.05"), 0.05),
    "momentum": (("--momentum", "0.5"), 0.5),
    "nesterov": (("--nesterov",), True),
    "betas": (("--betas", "0.8,0.99"), (0.8, 0.99)),
    "eps": (("--eps", "1e-6"), 1e-6),
    "rms_decay": (("--rms-decay", "0.9"), 0.9),
    "weight_decay": (("--weight-decay", "0.01"), 0.01),
    "seed": (("--seed", "3"), 3),
    "validation_fraction": (("--validation", "0.3"), 0.3),
    "patience": (("--patience", "4"), 4),
    "monitor": (("--monitor", "train_loss"), "train_loss"),
    "min_delta": (("--min-delta", "0.001"), 0.001),
    "restore_best": (("--no-restore-best",), False),
    "device": (("--device", "cpu"), "cpu"),
    "precision": (("--precision", "bf16"), "bf16"),
    "checkpoint_every": (("--checkpoint-every", "2"), 2),
    "backend": (("--backend", "torch"), "torch"),
    "threads": (("--threads", "1"), 1),
    "label_smoothing": (("--label-smoothing", "0.1"), 0.1),
    "members": (("--members", "2"), 2),
}
TRAIN_ONLY = ("checkpoint_every", "members")  # compare keeps no checkpoints, trains one network


def _command(name):
    return typer.main.get_command(cli.app).commands[name]


def _flags(name):
    return [
        flag
        for param in _command(name).params
        for flag in (*param.opts, *param.secondary_opts)
        if flag.startswith("--")
    ]


def _specs_of(command):
    return [spec for spec in _SPECS if command in spec.commands]


class _Resolved(Exception):
    """Raised in place of training, carrying what the command built."""

    def __init__(self, network):
        super().__init__("resolved")
        self.network = network


@pytest.fixture
def resolve(monkeypatch, run, tmp_path):
    """Run a command up to the mapping of its options; return the network and TrainConfig."""
    mapping = _resolve

    def stop(bundled, typed):
        raise _Resolved(mapping(bundled, typed))

    for command in ("compare", "train"):
        monkeypatch.setattr(f"softclass.cli.commands.{command}._resolve", stop)

    def invoke(command, *args, data=IRIS):
        where = (data, "--out", tmp_path / "out") if command == "train" else (data,)
        with pytest.raises(_Resolved) as resolved:
            run(command, *where, *args)
        return resolved.value.network

    return invoke


def test_compare_and_train_declare_each_shared_option_once():
    flags = {name: _flags(name) for name in ("compare", "train")}
    for name, listed in flags.items():
        assert len(listed) == len(set(listed)), name
    spec_flags = [spec.flag for spec in _SPECS]
    assert len(spec_flags) == len(set(spec_flags))
    # Beside the table, the two commands share only options whose meaning differs: compare's
    # --out has a default and --design takes several letters, train's needs both; --overwrite is
    # an output flag (not a training option), declared beside --out in each.
    shared = set(flags["compare"]) & set(flags["train"])
    declared_apart = {
        flag
        for flag in shared
        if not any(flag in (spec.flag, f"--no-{spec.flag[2:]}") for spec in _SPECS)
    }
    assert declared_apart == {"--out", "--design", "--overwrite"}
    # Each table entry is the very declaration both commands carry.
    import inspect

    for spec in _specs_of("compare"):
        if "train" in spec.commands:
            compare = inspect.signature(cli.compare).parameters[spec.name]
            train = inspect.signature(cli.train).parameters[spec.name]
            assert compare.annotation is train.annotation is spec.annotation
            assert compare.default == train.default == spec.default


def test_every_field_of_the_training_configuration_has_a_flag():
    assert {spec.library for spec in _SPECS} >= CONFIG_FIELDS
    assert set(TYPED) == CONFIG_FIELDS  # a new field needs a flag and an example here
    for spec in _SPECS:
        if spec.library in CONFIG_FIELDS and spec.library not in TRAIN_ONLY:
            assert spec.commands == ("compare", "train"), spec.flag
    train_only = (*TRAIN_ONLY, "memory", "sync")  # and the streamed-table options
    assert _specs_of("compare") == [s for s in _SPECS if s.library not in train_only]


@pytest.mark.parametrize("command", ["compare", "train"])
@pytest.mark.parametrize("field", sorted(TYPED))
def test_each_option_lands_in_the_training_configuration(resolve, run, command, field):
    typed, expected = TYPED[field]
    if field in TRAIN_ONLY and command == "compare":
        code, _, err = run(command, *typed)
        assert code == 2 and f"No such option: {typed[0]}" in err
        return
    network = resolve(command, *typed)
    assert getattr(network.config, field) == expected
    untouched = TrainConfig(**DEMONSTRATION.train_options())
    for other in CONFIG_FIELDS - {field}:
        assert getattr(network.config, other) == getattr(untouched, other), other


@pytest.mark.parametrize("command", ["compare", "train"])
def test_the_network_options_land_in_the_network(resolve, command):
    network = resolve(command, "--hidden", "16,8", "--activation", "gelu")
    assert (network.hidden, network.activation) == ((16, 8), "gelu")


@pytest.mark.parametrize("command", ["compare", "train"])
def test_options_not_typed_take_the_tables_defaults(resolve, command):
    for data, defaults in ((IRIS, DEMONSTRATION), (PEOPLE, TABLE)):
        network = resolve(command, data=data)
        assert network.defaults is defaults
        assert network.config == TrainConfig(**defaults.train_options())
        assert (network.hidden, network.activation) == (defaults.hidden, defaults.activation)
    typed = resolve(command, "--lr", "0.3", data=PEOPLE)
    assert (typed.config.learning_rate, typed.config.optimizer) == (0.3, TABLE.optimizer)


def test_without_validation_rows_the_tables_early_stopping_is_off(resolve):
    assert TABLE.patience is not None
    assert resolve("train", "--validation", "0", data=PEOPLE).config.patience is None
    kept = resolve("train", "--validation", "0", "--monitor", "train_loss", data=PEOPLE)
    assert kept.config.patience == TABLE.patience
    typed = resolve("train", "--validation", "0", "--patience", "3", data=PEOPLE)
    assert typed.config.patience == 3


def test_help_states_every_default_and_lists_the_registries(run):
    for command in ("compare", "train"):
        code, out, _ = run(command, "--help")
        assert code == 0
        text = " ".join(out.replace("│", " ").split())
        assert not any(placeholder in text for placeholder in _REGISTRY_NAMES)
        for names in (OPTIMIZERS, ACTIVATIONS, MONITORS, BACKENDS):
            *rest, last = names
            assert f"{', '.join(rest)} or {last}" in text
        assert "Default: sgd on the bundled Iris, adam on your table." in text
        assert "Default: 0.9,0.999." in text and "Default: validation_loss." in text
        assert "Default: 0.2." in text and "Default: on." in text
    train = _command("train")
    for param in train.get_params(train.make_context("train", [str(IRIS), "--out", "m"])):
        spec = next((s for s in _SPECS if s.flag in param.opts), None)
        if spec is not None and spec.default is None and spec.panel != "Data":
            assert "Default:" in param.help, spec.flag


# (typed, TrainConfig keyword arguments, the library's message, the command line's message)
MESSAGES = [
    (("--lr", "0"), {"learning_rate": 0.0}, "learning_rate=0.0 must be > 0", "--lr 0 must be > 0"),
    (
        ("--nesterov", "--optimizer", "adam"),
        {"nesterov": True, "optimizer": "adam"},
        "nesterov=True needs optimizer='sgd' with momentum > 0, got optimizer='adam', momentum=0.9",
        "--nesterov needs --optimizer sgd with --momentum > 0, got --optimizer adam, --momentum "
        "0.9",
    ),
    (
        ("--nesterov", "--momentum", "0"),
        {"nesterov": True, "momentum": 0.0},
        "nesterov=True needs optimizer='sgd' with momentum > 0, got optimizer='sgd', momentum=0.0",
        "--nesterov needs --optimizer sgd with --momentum > 0, got --optimizer sgd, --momentum 0",
    ),
    (
        ("--monitor", "val_f1"),
        {"monitor": "val_f1"},
        "monitor='val_f1': expected one of " + ", ".join(MONITORS),
        "--monitor val_f1: expected one of " + ", ".join(MONITORS),
    ),
    (
        ("--backend", "gpu"),
        {"backend": "gpu"},
        "backend='gpu': expected one of " + ", ".join(BACKENDS),
        "--backend gpu: expected one of " + ", ".join(BACKENDS),
    ),
    (
        ("--optimizer", "no-such-optimizer"),
        {"optimizer": "no-such-optimizer"},
        "optimizer='no-such-optimizer': expected one of " + ", ".join(OPTIMIZERS),
        "--optimizer no-such-optimizer: expected one of " + ", ".join(OPTIMIZERS),
    ),
    (
        ("--device", "tpu"),
        {"device": "tpu"},
        "device='tpu': expected one of auto, cpu, cuda",
        "--device tpu: expected one of auto, cpu, cuda",
    ),
    (
        ("--precision", "fp16"),
        {"precision": "fp16"},
        "precision='fp16': expected one of fp32, bf16",
        "--precision fp16: expected one of fp32, bf16",
    ),
    (
        ("--momentum", "1"),
        {"momentum": 1.0},
        "momentum=1.0 must lie in [0, 1)",
        "--momentum 1 must lie in [0, 1)",
    ),
    (
        ("--weight-decay", "-0.5"),
        {"weight_decay": -0.5},
        "weight_decay=-0.5 must be a number ≥ 0",
        "--weight-decay -0.5 must be a number ≥ 0",
    ),
    (
        ("--min-delta", "-1"),
        {"min_delta": -1.0},
        "min_delta=-1.0 must be a number ≥ 0",
        "--min-delta -1 must be a number ≥ 0",
    ),
    (
        ("--eps", "-1e-9"),
        {"eps": -1e-9},
        "eps=-1e-09 must be a number ≥ 0",
        "--eps -1e-09 must be a number ≥ 0",
    ),
    (
        ("--betas", "0.9,1"),
        {"betas": (0.9, 1.0)},
        "betas=(0.9, 1.0) must be two numbers in [0, 1)",
        "--betas 0.9,1 must be two numbers in [0, 1)",
    ),
    (
        ("--betas", "0.9"),
        {"betas": (0.9,)},
        "betas=(0.9,) must be two numbers in [0, 1)",
        "--betas 0.9 must be two numbers in [0, 1)",
    ),
    (
        ("--epochs", "0"),
        {"epochs": 0},
        "epochs=0 must be an integer ≥ 1",
        "--epochs 0 must be an integer ≥ 1",
    ),
    (
        ("--batch-size", "0"),
        {"batch_size": 0},
        "batch_size=0 must be an integer ≥ 1",
        "--batch-size 0 must be an integer ≥ 1",
    ),
    (
        ("--seed", "-1"),
        {"seed": -1},
        "seed=-1 must be an integer ≥ 0",
        "--seed -1 must be an integer ≥ 0",
    ),
    (
        ("--threads", "-1"),
        {"threads": -1},
        "threads=-1 must be an integer ≥ 0",
        "--threads -1 must be an integer ≥ 0",
    ),
    (
        ("--validation", "1"),
        {"validation_fraction": 1.0},
        "validation_fraction=1.0 must lie in [0, 1) (0 = none)",
        "--validation 1 must lie in [0, 1) (0 = none)",
    ),
]


@pytest.mark.parametrize(("typed", "keywords", "library", "typed_message"), MESSAGES)
def test_errors_name_the_flag_on_the_command_line_and_the_parameter_in_python(
    run, tmp_path, typed, keywords, library, typed_message
):
    with pytest.raises(OptionError, match=f"^{re.escape(library)}$") as raised:
        TrainConfig(**keywords)
    assert _as_typed(raised.value) == typed_message
    for command, where in (("compare", ()), ("train", (IRIS, "--out", tmp_path / "model"))):
        code, out, err = run(command, *where, *typed)
        assert (code, out) == (2, ""), err
        assert err == f"error: {typed_message}\n"
    assert not (tmp_path / "model").exists()


def test_checkpoint_every_is_named_as_typed(run, tmp_path):
    with pytest.raises(OptionError, match=r"^checkpoint_every=0 must be an integer ≥ 1$"):
        TrainConfig(checkpoint_every=0)
    code, _, err = run("train", IRIS, "--out", tmp_path / "m", "--checkpoint-every", "0")
    assert code == 2 and err == "error: --checkpoint-every 0 must be an integer ≥ 1\n"


def test_a_missing_cuda_device_is_named_per_front_door(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        OptionError,
        match=r"^device='cuda' was asked for but no CUDA device is available; use device='cpu'$",
    ) as raised:
        resolve_device("cuda")
    assert _as_typed(raised.value) == (
        "--device cuda was asked for but no CUDA device is available; use --device cpu"
    )


def test_bad_betas_text_is_refused_with_the_flag(run):
    code, _, err = run("compare", "--betas", "0.9,x")
    assert code == 2 and "--betas" in err and "expected comma-separated numbers" in err


def test_early_stopping_without_validation_rows_names_the_flags(run, tmp_path):
    code, _, err = run(
        "train", IRIS, "--out", tmp_path / "m", "--validation", "0", "--patience", "3"
    )
    assert code == 2
    assert err.lstrip() == (
        "error: early stopping (--patience 3) needs validation rows: set --validation > 0, "
        "--monitor 'train_loss' or --patience 0\n"
    )


def test_an_option_error_spells_each_option_per_front_door():
    error = OptionError(
        "{nesterov=} needs {optimizer:sgd}; {patience=} and {other=}; {momentum} > 0",
        nesterov=False,
        patience=None,
        other=1,
    )
    assert (
        str(error)
        == "nesterov=False needs optimizer='sgd'; patience=None and other=1; momentum > 0"
    )
    # Flags as typed; an option without a flag keeps the library's spelling.
    assert _as_typed(error) == (
        "--no-nesterov needs --optimizer sgd; --patience 0 and other=1; --momentum > 0"
    )
    assert isinstance(error, ConfigError) and isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.values) == (OptionError, str(error), error.values)


def test_every_option_reaches_the_saved_configuration(run, tmp_path):
    """End to end: train's model.json and compare's report.json hold every typed option."""
    typed, expected = [], {}
    for field, (args, value) in TYPED.items():
        if field in ("precision", "optimizer", "monitor"):
            continue  # bf16 needs the autograd backend, nesterov needs sgd: set apart below
        typed.extend(args)
        expected[field] = list(value) if isinstance(value, tuple) else value
    typed += ["--optimizer", "sgd", "--monitor", "validation_accuracy"]
    expected |= {"optimizer": "sgd", "monitor": "validation_accuracy"}
    model = tmp_path / "model"
    code, _, err = run("train", IRIS, "--out", model, *typed)
    assert code == 0, err
    saved = json.loads((model / "model.json").read_text())["train_config"]
    assert {field: saved[field] for field in expected} == expected
    compare_typed = list(typed)
    for field in TRAIN_ONLY:
        flag = TYPED[field][0][0]
        del compare_typed[compare_typed.index(flag) : compare_typed.index(flag) + 2]
    code, out, err = run(
        "compare", *compare_typed, "--design", "AB", "--out", tmp_path / "c", "--json"
    )
    assert code == 0, err
    report = json.loads(out)["train_config"]
    for field in TRAIN_ONLY:
        expected.pop(field)
        assert report[field] == getattr(TrainConfig(), field)
    assert {field: report[field] for field in expected} == expected


def test_train_without_validation_rows_labels_its_rows(run, tmp_path):
    code, out, err = run(
        "train",
        IRIS,
        "--out",
        tmp_path / "m",
        "--validation",
        "0",
        "--epochs",
        "8",
        "--patience",
        "2",
        "--monitor",
        "train_loss",
    )
    assert code == 0, err
    text = " ".join(out.split())
    assert "validation loss" not in text and "chosen on these validation rows" not in text
    assert "kept: chosen on the training loss" in text
    assert (
        "no validation rows (--validation 0): report.html measures the model on its training rows"
        in text
    )
    page = (tmp_path / "m" / "report.html").read_text()
    assert "rows this page calls validation or held-out rows are the 150 training rows" in page


@pytest.mark.parametrize("command", ["compare", "train"])
def test_a_read_limit_below_one_is_refused_by_every_command_that_reads(run, tmp_path, command):
    where = ("--out", tmp_path / "out") if command == "train" else ()
    code, _, err = run(command, IRIS, *where, "--max-columns", "0")
    assert code == 2 and "--max-columns 0: expected a positive number" in err
