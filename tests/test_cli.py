"""The compare / train / predict commands: outputs, round trips and one-line errors."""

import html
import inspect
import json
import sys

import polars as pl
import pytest
import torch

from softclass import cli
from softclass.data import bundled_path
from softclass.jobs.store import load_model
from softclass.training.trainer import TrainConfig

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CITIES = {"Anaheim", "Boulder", "Chicago"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def run(monkeypatch, capsys):
    """Run ``softclass ARGS`` in this process through the console entry point."""

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


def test_cli_defaults_are_the_library_defaults():
    defaults = TrainConfig()
    for command in (cli.compare, cli.train):
        parameters = inspect.signature(command).parameters
        assert parameters["epochs"].default == defaults.epochs
        assert parameters["lr"].default == defaults.learning_rate
        assert parameters["momentum"].default == defaults.momentum
        assert parameters["batch_size"].default == defaults.batch_size
        assert parameters["optimizer"].default == defaults.optimizer
        assert parameters["validation"].default == defaults.validation_fraction


def test_short_compare_prints_the_table_and_the_agreement(run, tmp_path):
    code, out, err = run("compare", "--epochs", "3", "--design", "AB", "--out", tmp_path / "r")
    assert code == 0, err
    assert "A vs B: identical" in out or "A vs B: equal to float tolerance" in out
    assert "120 training rows, 30 validation rows, MLP 4-7-3 tanh" in out
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

    code, out, err = run("predict", model_dir, people)
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
    assert [record["row"] for record in records] == [0, 1]
    assert {record["predicted"] for record in records} <= CITIES


def test_train_refuses_to_overwrite_then_resumes(run, tmp_path):
    people = bundled_path("people")
    model_dir = tmp_path / "model"
    assert run("train", people, "--epochs", "2", "--out", model_dir)[0] == 0
    code, _, err = run("train", people, "--epochs", "2", "--out", model_dir)
    assert code == 2 and "already holds a model or checkpoint: pass --resume" in err
    code, out, err = run("train", people, "--epochs", "4", "--out", model_dir, "--resume")
    assert code == 0, err
    assert "4 epochs" in out
    assert load_model(model_dir).history_summary["epochs"] == 4


BAD_TABLES = {
    "empty": ("", "the file is empty"),
    "non-numeric": ("a,b,c\n1,2,x\n1,zz,y\n3,4,x\n5,6,y\n", "'zz' is not a number"),
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


def test_a_class_seen_only_at_predict_time_is_refused(run, tmp_path):
    model_dir = tmp_path / "model"
    assert run("train", bundled_path("people"), "--epochs", "1", "--out", model_dir)[0] == 0
    rows = tmp_path / "rows.csv"
    rows.write_text('age,income,weight,city\n23,"$72,000",155,Denver\n')
    output = tmp_path / "predictions.csv"
    code, _, err = run("predict", model_dir, rows, "--output", output)
    assert code == 2 and "Denver" in err and err.strip().count("\n") == 0
    assert not output.exists()


def test_bad_options_are_one_line(run, tmp_path):
    code, _, err = run("compare", "--epochs", "0", "--out", tmp_path / "o")
    assert code == 2 and "epochs=0 must be an integer ≥ 1" in err
    code, _, err = run("compare", "--divide", "age", "--out", tmp_path / "o")
    assert code == 2 and "expected COLUMN=VALUE" in err
    code, _, err = run("compare", "--hidden", "7,x", "--out", tmp_path / "o")
    assert code == 2 and "comma-separated integers" in err
    code, _, err = run("compare", "--threads", "-1", "--out", tmp_path / "o")
    assert code == 2 and "expected 0 or more" in err
    code, _, err = run("predict", tmp_path / "nowhere", bundled_path("iris"))
    assert code == 2 and "no such model directory" in err
    code, _, err = run("predict", tmp_path, bundled_path("iris"), "--format", "xml")
    assert code == 2 and "expected csv or json" in err
    assert not (tmp_path / "o").exists()


def test_training_to_a_directory_needs_a_recipe(tmp_path):
    from softclass.errors import ConfigError
    from softclass.jobs.compare import PreparedData
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
