"""The compare / train / predict commands: outputs, round trips and one-line errors."""

import html
import inspect
import json

import polars as pl
import pytest
import torch

from softclass import cli
from softclass.cli.options import _SPECS, _as_typed, _Typed
from softclass.cli.progress import _ProgressBars
from softclass.cli.run import _is_bundled_iris, _resolve
from softclass.data import bundled_path
from softclass.jobs.defaults import DEMONSTRATION, TABLE
from softclass.jobs.store import load_model
from softclass.mlp.optimizers import OPTIMIZERS
from softclass.training.config import TrainConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CITIES = {"Anaheim", "Boulder", "Chicago"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _resolved(bundled, **typed):
    return _resolve(bundled, _Typed(**typed))


def test_the_bundled_iris_keeps_the_demonstration_and_a_table_gets_competitive_defaults():
    library = TrainConfig()
    training = [spec for spec in _SPECS if spec.panel != "Data"]
    for command in (cli.compare, cli.train):
        parameters = inspect.signature(command).parameters
        # Training options are left unset and filled in later: the table's default, else the
        # library's.
        assert all(
            parameters[spec.name].default is None for spec in training if spec.name in parameters
        )
    assert _resolved(True).config.validation_fraction == library.validation_fraction
    iris = _resolved(True)
    assert iris.defaults is DEMONSTRATION and (iris.hidden, iris.activation) == ((7,), "tanh")
    assert (iris.config.epochs, iris.config.optimizer, iris.config.learning_rate) == (
        library.epochs,
        library.optimizer,
        library.learning_rate,
    )
    assert (iris.config.momentum, iris.config.batch_size, iris.config.patience) == (
        library.momentum,
        library.batch_size,
        None,
    )
    table = _resolved(False)
    assert table.defaults is TABLE and (table.hidden, table.activation) == ((100,), "relu")
    assert (table.config.optimizer, table.config.learning_rate, table.config.batch_size) == (
        "adam",
        0.001,
        64,
    )
    assert (table.config.epochs, table.config.patience) == (300, 20)
    typed = _resolved(False, hidden="7", optimizer="sgd", lr=0.05, patience=0)
    assert (typed.hidden, typed.config.optimizer, typed.config.learning_rate) == ((7,), "sgd", 0.05)
    assert typed.config.patience is None  # --patience 0 turns early stopping off
    assert (typed.activation, typed.config.batch_size) == ("relu", 64)


def test_help_text_is_plain_and_states_both_defaults(run):
    for command in ((), ("compare",), ("train",), ("predict",), ("check",), ("explain",)):
        code, out, _ = run(*command, "--help")
        assert code == 0
        for markup in ("``", ":class:", ":func:", ":mod:", "<bool>"):
            assert markup not in out, (command, markup)
    code, out, _ = run("compare", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert "--json Print JSON only." in text
    assert "Default: 7 on the bundled Iris, 100 on your table." in text
    assert "Default: sgd on the bundled Iris, adam on your table." in text
    assert "Default: off on the bundled Iris, 20 epochs on your table." in text
    assert "chosen on 42 real tables" in text


def test_a_users_table_trains_with_the_table_defaults_and_says_so(run, tmp_path):
    out_dir = tmp_path / "r"
    code, out, err = run(
        "compare",
        bundled_path("people"),
        "--epochs",
        "3",
        "--design",
        "AC",
        "--out",
        out_dir,
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["defaults"]["name"] == "table" and report["defaults"]["hidden"] == [100]
    assert report["model_config"]["hidden"] == [100]
    assert report["model_config"]["activation"] == "relu"
    assert report["train_config"]["optimizer"] == "adam"
    assert report["train_config"]["learning_rate"] == 0.001
    assert report["train_config"]["patience"] == 20
    # Early stopping: a tenth of the training rows chooses the epoch, apart from validation.
    assert report["rows"] == {"train": 145, "stopping": 15, "validation": 40}
    assert report["history_rows"] == "stopping"
    code, out, err = run(
        "compare", "--epochs", "2", "--design", "A", "--out", out_dir, "--json", "--overwrite"
    )
    assert json.loads(out)["defaults"]["name"] == "demonstration"


def test_early_stopping_says_which_rows_chose_the_epoch(run, tmp_path):
    code, out, err = run(
        "compare",
        "--epochs",
        "30",
        "--patience",
        "2",
        "--lr",
        "0.1",
        "--design",
        "AC",
        "--out",
        tmp_path / "r",
    )
    assert code == 0, err
    text = " ".join(out.split())
    assert (
        "rows: 108 trained the weights, 12 stopping rows chose the epoch (patience 2), 30 "
        "validation rows gave every number below" in text
    )
    assert "epochs: best/trained" in text
    assert "own loss" in text and "not comparable across designs" in text


def test_progress_bars_show_the_time_left():
    from rich.progress import TimeRemainingColumn

    bars = _ProgressBars(enabled=False)
    assert any(isinstance(column, TimeRemainingColumn) for column in bars.progress.columns)


def test_short_compare_prints_the_table_and_the_agreement(run, tmp_path):
    code, out, err = run("compare", "--epochs", "3", "--design", "AB", "--out", tmp_path / "r")
    assert code == 0, err
    assert "A vs B: identical" in out or "A vs B: equal up to rounding" in out
    assert "A vs B on the bundled Iris: MLP 4-7-3 tanh, sgd lr 0.01" in out
    assert "rows: 120 trained the weights, 30 validation rows gave every number below" in out
    assert "float64 gradients at the same weights agree to" in out
    assert "how: both losses' gradients in float64 at the same weights" in out
    assert f"written to {tmp_path / 'r'}" in out
    assert (tmp_path / "r" / "loss_curves.png").read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in (tmp_path / "r" / "models").iterdir()) == ["A", "B"]
    page = (tmp_path / "r" / "report.html").read_text()
    command = f"softclass compare --epochs 3 --design AB --out {tmp_path / 'r'}"
    assert f"<code>{html.escape(command)}</code>" in page
    assert "<title>softclass compare: bundled iris → species</title>" in page


@pytest.mark.slow
def test_compare_json_on_iris_reaches_the_goal(run, tmp_path):
    code, out, _ = run("compare", "--json", "--out", tmp_path / "r", "--seeds", "2")
    assert code == 0
    report = json.loads(out)  # stdout is JSON only
    for name in "AB":
        assert report["designs"][name]["mean_over_seeds"]["validation_accuracy"] >= 0.93
    a_b = next(item for item in report["agreement"] if item["pair"] == "A-B")
    assert a_b["max_weight_diff"] <= 1e-5 and a_b["max_loss_diff"] <= 1e-5
    assert report["seeds"] == [0, 1]
    for name in ("loss_curves.png", "confusion_matrices.png", "calibration.png"):
        assert (tmp_path / "r" / name).read_bytes()[:8] == PNG_SIGNATURE


def _people_arguments():
    return [
        "--normalize",
        "divide",
        "--divide",
        "age=100",
        "--divide",
        "income=100000",
        "--divide",
        "weight=1000",
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
    ]


def test_train_then_predict_round_trips_class_names(run, tmp_path):
    people = bundled_path("people")
    model_dir = tmp_path / "model"
    code, out, err = run(
        "train", people, "--design", "D", "--epochs", "30", "--out", model_dir, *_people_arguments()
    )
    assert code == 0, err
    assert "design D" in out and f"model saved to {model_dir}" in out
    assert load_model(model_dir).classes == tuple(sorted(CITIES))
    page = (model_dir / "report.html").read_text()
    assert f"<title>softclass train: {html.escape(str(people))} → city</title>" in page
    assert f"softclass train {people} --design D --epochs 30" in html.unescape(page)

    code, out, err = run("predict", model_dir, people, "--accuracy")
    assert code == 0, err
    table = pl.read_csv(out.encode())
    assert table.columns == ["row", "Anaheim", "Boulder", "Chicago", "predicted"]
    assert set(table["predicted"]) <= CITIES and table.height == 200
    sums = table.select(pl.sum_horizontal("Anaheim", "Boulder", "Chicago")).to_series()
    assert (sums - 1).abs().max() < 1e-5
    assert "accuracy" in err
    raw = pl.read_csv(people)
    accuracy = (table["predicted"] == raw["city"]).mean()
    assert accuracy >= 0.6

    rows = tmp_path / "rows.csv"
    rows.write_text('age,income,weight\n23,"$72,000",155\n61,"$41,000",240\n')
    output = tmp_path / "predictions.json"
    code, out, err = run("predict", model_dir, rows, "--format", "json", "--output", output)
    assert code == 0 and out == ""
    records = json.loads(output.read_text())
    assert [record["row"] for record in records] == [2, 3]  # header = row 1, as in messages
    assert {record["predicted"] for record in records} <= CITIES


def test_train_refuses_to_overwrite_then_resumes(run, tmp_path):
    people = bundled_path("people")
    model_dir = tmp_path / "model"
    assert run("train", people, "--epochs", "2", "--out", model_dir)[0] == 0
    code, _, err = run("train", people, "--epochs", "2", "--out", model_dir)
    assert (
        code == 2 and "already holds a train run: pass --resume to continue it, --overwrite" in err
    )
    code, out, err = run("train", people, "--epochs", "4", "--out", model_dir, "--resume")
    assert code == 0, err
    assert "4 epochs" in out
    assert load_model(model_dir).history_summary["epochs"] == 4


BAD_TABLES = {
    "empty": ("", "the file is empty"),
    "nan": ("a,b,c\n1,2,x\n1,nan,y\n3,4,x\n5,6,y\n", "nan is not a finite number"),
    "single-class": ("a,b,c\n1,2,x\n1,3,x\n3,4,x\n", "only one class"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
@pytest.mark.parametrize("command", ["compare", "train"])
def test_bad_tables_give_one_line_and_no_output(run, tmp_path, case, command):
    text, message = BAD_TABLES[case]
    path = tmp_path / "bad.csv"
    path.write_text(text)
    out_dir = tmp_path / "out"
    code, _, err = run(command, path, "--out", out_dir, "--epochs", "1")
    assert code == 2
    assert err.startswith("error:") and message in err
    assert err.strip().count("\n") == 0
    assert not out_dir.exists()


def test_wrong_target_column_is_one_line(run, tmp_path):
    code, _, err = run(
        "compare", bundled_path("people"), "--target", "town", "--out", tmp_path / "out"
    )
    assert code == 2 and "town" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()


def test_a_class_seen_only_at_predict_time_is_ignored_or_counted(run, tmp_path):
    model_dir = tmp_path / "model"
    assert run("train", bundled_path("people"), "--epochs", "1", "--out", model_dir)[0] == 0
    rows = tmp_path / "rows.csv"
    rows.write_text('age,income,weight,city\n23,"$72,000",155,Denver\n30,"$50,000",150,Boulder\n')
    output = tmp_path / "predictions.csv"
    code, _, err = run("predict", model_dir, rows, "--output", output)
    assert code == 0 and "Denver" not in err and pl.read_csv(output).height == 2
    code, _, err = run("predict", model_dir, rows, "--output", output, "--accuracy")
    assert code == 0, err
    assert "1 row(s) have no label or a class the model never saw" in err
    assert "on 1 rows with a known class in 'city'" in err


def test_bad_options_are_one_line(run, tmp_path):
    code, _, err = run("compare", "--epochs", "0", "--out", tmp_path / "o")
    assert code == 2 and "--epochs 0 must be an integer ≥ 1" in err
    code, _, err = run("compare", "--lr", "0", "--out", tmp_path / "o")
    assert code == 2 and "--lr 0 must be > 0" in err
    code, _, err = run("compare", "--optimizer", "no-such-optimizer", "--out", tmp_path / "o")
    listed = ", ".join(OPTIMIZERS)
    assert code == 2 and f"--optimizer no-such-optimizer: expected one of {listed}\n" in err
    code, _, err = run("compare", "--patience", "-1", "--out", tmp_path / "o")
    assert code == 2 and "expected 0 (off) or more, got -1" in err
    code, _, err = run("compare", "--divide", "age", "--out", tmp_path / "o")
    assert code == 2 and "expected COLUMN=VALUE" in err
    code, _, err = run("compare", "--hidden", "7,x", "--out", tmp_path / "o")
    assert code == 2 and "comma-separated integers" in err
    code, _, err = run("compare", "--threads", "-1", "--out", tmp_path / "o")
    assert code == 2 and "--threads -1 must be an integer ≥ 0" in err
    code, _, err = run("predict", tmp_path / "nowhere", bundled_path("iris"))
    assert code == 2 and "no such model directory" in err
    code, _, err = run("predict", tmp_path, bundled_path("iris"), "--format", "xml")
    assert code == 2 and "expected one of csv, json, jsonl" in err
    assert not (tmp_path / "o").exists()


def test_training_to_a_directory_needs_a_recipe(tmp_path):
    from softclass.data.prepare import PreparedData
    from softclass.errors import ConfigError
    from softclass.jobs.train_predict import train_to_directory
    from softclass.mlp.designs import get_design

    data = PreparedData(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]), None, None, ("a", "b"))
    with pytest.raises(ConfigError, match="needs data prepared from a table"):
        train_to_directory(data, get_design("A"), tmp_path / "model")


def test_check_a_saved_model_on_its_table(run, tmp_path):
    model_dir = tmp_path / "model"
    code, _, err = run("train", bundled_path("iris"), "--out", model_dir, "--epochs", "3")
    assert code == 0, err
    code, out, err = run("check", model_dir, bundled_path("iris"), "--json")
    assert code == 0, err
    records = json.loads(out)
    assert records[0]["mistake"] == "saved-model" and records[0]["findings"] == []
    code, out, err = run("check", model_dir, bundled_path("iris"))
    assert code == 0 and "no pairing problem found" in out
    code, _, err = run("check", model_dir)
    assert code == 2
    assert "needs MODEL_DIR and DATA" in err


@pytest.mark.parametrize(
    ("message", "typed"),
    [
        (
            "compare needs validation rows: set validation_fraction > 0",
            "compare needs validation rows: set --validation > 0",
        ),
        (
            "seeds=0 must be an integer from 1 to 1,000",
            "--seeds 0 must be an integer from 1 to 1,000",
        ),
        (
            "backend='compiled' cannot train with precision='bf16': only backend='autograd' "
            "(or 'auto') does",
            "--backend 'compiled' cannot train with --precision 'bf16': only --backend "
            "'autograd' (or 'auto') does",
        ),
        (
            "early stopping (patience=3) needs validation rows: set validation_fraction > 0, "
            "monitor='train_loss' or patience=None",
            "early stopping (--patience 3) needs validation rows: set --validation > 0, "
            "--monitor 'train_loss' or --patience 0",
        ),
        ("batch_size must be ≥ 1", "--batch-size must be ≥ 1"),
        ("the seed's table has no column 'epochs'", "the seed's table has no column 'epochs'"),
        ("recipe field normalization='x' is unknown", "recipe field normalization='x' is unknown"),
    ],
)
def test_messages_of_other_modules_name_training_options_as_typed(message, typed):
    """Errors raised as plain text (not OptionError) by modules that name a TrainConfig field;
    only TrainConfig fields and --seeds are rewritten (a recipe's fields are not flags)."""
    from softclass.errors import ConfigError

    assert _as_typed(ConfigError(message)) == typed


def test_the_bundled_iris_file_is_the_demonstration_wherever_it_is_named(tmp_path):
    assert _is_bundled_iris(None) and _is_bundled_iris(bundled_path("iris"))
    assert not _is_bundled_iris(bundled_path("people"))
    copy = tmp_path / "iris.csv"
    copy.write_bytes(bundled_path("iris").read_bytes())
    assert not _is_bundled_iris(copy)  # a user's copy is a user's table
