"""Exit codes and messages that tell the truth (issue 22): outputs that would destroy an input are
refused, every byte of stdout is accounted for, no flag value gives a traceback or a box, and
what an interrupt message says was kept is what the files hold."""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from softclass import io
from softclass.data import bundled_path
from softclass.data.prepare import prepare_table
from softclass.jobs.store import METADATA_FILE
from softclass.jobs.train_predict import train_to_directory
from softclass.mlp.designs import get_design
from softclass.training.config import TrainConfig

IRIS = bundled_path("iris")
ENVIRONMENT = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

pytestmark = pytest.mark.usefixtures("one_thread")


def _softclass(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "softclass", *map(str, args)],
        env=ENVIRONMENT,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def _tree(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("saved") / "model"
    train_to_directory(
        prepare_table(pl.read_csv(IRIS)), get_design("A"), out, TrainConfig(epochs=2)
    )
    return out


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(IRIS.read_bytes())
    return path


# -- an output never destroys an input ------------------------------------------------------------


def test_predict_refuses_to_write_over_its_input_table(run, model, rows):
    before = rows.read_bytes()
    code, out, err = run("predict", model, rows, "--output", rows)
    assert (code, out) == (2, "")
    assert err.strip() == (
        f"error: --output {rows} is the input {rows}: writing there would destroy it; choose "
        "another path"
    )
    assert rows.read_bytes() == before


@pytest.mark.parametrize("name", ["model.json", "model.safetensors", "predictions.csv"])
def test_predict_refuses_to_write_into_the_model_it_reads(run, model, rows, name):
    before = _tree(model)
    code, _, err = run("predict", model, rows, "--output", model / name)
    assert code == 2 and "lies inside the input" in err and err.count("\n") == 1
    assert _tree(model) == before


def test_train_refuses_a_dataset_directory_before_reading_it(run, tmp_path):
    dataset = tmp_path / "data"
    dataset.mkdir()
    pl.read_csv(IRIS).write_parquet(dataset / "part-0.parquet")
    before = _tree(dataset)
    code, out, err = run("train", dataset, "--out", dataset, "--epochs", 2)
    assert (code, out) == (2, "")  # before any work: not even the typing table
    assert err.strip() == (
        f"error: --out {dataset} is the input {dataset}: writing there would destroy it; choose "
        "another path"
    )
    assert _tree(dataset) == before


def test_compare_and_train_refuse_each_others_directory_and_a_second_run(run, tmp_path):
    out = tmp_path / "run"
    assert run("compare", "--design", "A", "--epochs", 2, "--out", out)[0] == 0
    before = _tree(out)
    code, _, err = run("train", IRIS, "--epochs", 2, "--out", out, "--overwrite")
    assert code == 2 and "holds a compare run; train writes a different kind" in err
    code, _, err = run("compare", "--design", "A", "--epochs", 2, "--out", out)
    assert code == 2 and "already holds a compare run: pass --overwrite" in err
    assert _tree(out) == before
    code, _, err = run("compare", "--design", "AB", "--epochs", 2, "--out", out, "--overwrite")
    assert code == 0, err
    assert sorted(path.name for path in (out / "models").iterdir()) == ["A", "B"]


def test_a_symlinked_out_is_followed_never_turned_into_links(run, tmp_path):
    victim = tmp_path / "victim"
    link = tmp_path / "link"
    victim.mkdir()
    link.symlink_to(victim)
    assert run("train", IRIS, "--epochs", 2, "--out", link)[0] == 0
    assert link.is_symlink() and (victim / METADATA_FILE).is_file()
    assert all(path.stat().st_nlink == 1 for path in victim.iterdir())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link", "victim"]


# -- what an interrupt says was kept is what the files hold -------------------------------------


def _signal_when(monkeypatch, module, name, signals, after=False):
    """Send ``signals`` (one after another) to this process when ``module.name`` is called
    (before it runs, or ``after`` it returned with ``--out`` as its last argument)."""
    real = getattr(module, name)

    def send():
        try:
            os.kill(os.getpid(), signals[0])  # the handler raises Interrupted here
        finally:
            for number in signals[1:]:  # arrives while the first unwinds: ignored
                os.kill(os.getpid(), number)

    def hooked(*args, **kwargs):
        if not after:
            send()
        result = real(*args, **kwargs)
        if after and Path(args[-1]).name == "model":  # the run's swap, not a nested one
            send()
        return result

    monkeypatch.setattr(module, name, hooked)


PHASES = {
    # phase: (module, function, after, what the message says)
    "reading": ("softclass.cli.commands.train", "_prepared_data", False, "untouched"),
    "training": ("softclass.jobs.train_predict", "train_model", False, "untouched"),
    "writing": ("softclass.jobs.train_predict", "_write_train_report", False, "untouched"),
    "after the swap": ("softclass.io", "_swap_into_place", True, "saved"),
}


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize(
    "signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]], ids=["sigterm", "double-sigint"]
)
def test_an_interrupt_at_each_phase_says_truly_what_was_kept(
    run, tmp_path, monkeypatch, phase, signals
):
    import importlib

    out = tmp_path / "model"
    assert run("train", IRIS, "--epochs", 2, "--out", out)[0] == 0
    earlier = _tree(out)
    module, name, after, said = PHASES[phase]
    _signal_when(monkeypatch, importlib.import_module(module), name, signals, after)
    code, _, err = run("train", IRIS, "--epochs", 3, "--out", out, "--overwrite")
    assert code == 128 + signals[0]
    message = err.strip().splitlines()[-1]
    if said == "untouched":
        assert message.endswith(f"the model saved in {out} before this run is untouched")
        assert _tree(out) == earlier
    else:
        assert message.endswith(
            f"this run's model, checkpoint and report were saved in {out} before it stopped"
        )
        assert _tree(out) != earlier
        assert json.loads((out / METADATA_FILE).read_text())["history"]["epochs"] == 3
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []


# -- every byte of stdout accounted for ----------------------------------------------------------


def test_write_all_continues_after_a_short_write_and_reports_the_failure(monkeypatch):
    written = []

    def short_then_full(descriptor, data):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(bytes(data[: len(data) // 2]))
        return len(data) // 2

    monkeypatch.setattr(io.os, "write", short_then_full)
    with pytest.raises(OSError, match="No space left"):
        io.write_all(1, b"0123456789")
    assert written == [b"01234"]


@pytest.mark.parametrize(
    "command",
    [
        ["train", IRIS, "--epochs", 2, "--out", "{tmp}/model"],
        ["explain"],
        ["--help"],
        ["predict", "{model}", IRIS],
    ],
    ids=["train", "explain", "help", "predict"],
)
def test_a_pipe_closed_early_ends_with_141(tmp_path, model, command):
    arguments = [str(part).format(tmp=tmp_path, model=model) for part in command]
    process = _softclass(*arguments, stdout=subprocess.PIPE)
    process.stdout.readline()  # `| head -1`
    process.stdout.close()
    _, err = process.communicate(timeout=300)
    assert process.returncode in (0, 141)  # 0 only when everything fit in the pipe already
    assert b"Traceback" not in err


def test_explain_into_a_closed_pipe_is_141_quietly():
    reader, writer = os.pipe()
    os.close(reader)
    process = _softclass("explain", stdout=writer)
    os.close(writer)
    _, err = process.communicate(timeout=120)
    assert (process.returncode, err) == (141, b"")


def test_closed_stdout_is_one_line_and_exit_2(model, tmp_path):
    process = _softclass("predict", model, IRIS, stdout=subprocess.DEVNULL, preexec_fn=_close_1)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert err.decode().strip() == (
        "error: writing to standard output failed (standard output is closed): the output is "
        "incomplete"
    )


def _close_1():
    os.close(1)


def test_closed_stdout_with_output_file_still_writes_it(model, tmp_path):
    output = tmp_path / "p.csv"
    process = _softclass("predict", model, IRIS, "--output", output, preexec_fn=_close_1)
    _, err = process.communicate(timeout=120)
    assert (process.returncode, err) == (0, b"")
    assert len(output.read_text().splitlines()) == 151


# -- no traceback and no box from any flag value ---------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--batch-size", "1e20"], "'--batch-size': Input should be a valid integer"),
        (["--batch-size", str(10**20)], f"--batch-size {10**20} must be at most 16,777,216"),
        (["--seed", str(2**63)], f"--seed {2**63} must be at most"),
        (["--epochs", "1e18"], "'--epochs': Input should be a valid integer"),
        (["--epochs", str(10**18)], f"--epochs {10**18} must be at most 1,000,000"),
        (["--hidden", "1000000000"], "a 4-1000000000-3 network has 8,000,000,003 parameters"),
        (["--normalize", "divide", "--divide", "a"], "--divide: expected COLUMN=VALUE"),
        (["--patience", "-1"], "--patience: expected 0 (off) or more, got -1"),
        (["--threads", "1000000"], "--threads 1000000 must be at most 1,024"),
    ],
)
def test_a_bad_flag_value_is_one_line_naming_the_flag(
    run, tmp_path, no_training, arguments, expected
):
    code, _, err = run("train", IRIS, "--out", tmp_path / "m", *arguments)
    assert code == 2
    assert err.strip().count("\n") == 0 and err.strip().startswith("error: "), err
    assert expected in err


def test_seeds_and_explain_inputs_are_bounded(run, tmp_path, no_training):
    code, _, err = run("compare", "--seeds", 10**6, "--out", tmp_path / "c")
    assert code == 2 and err.strip() == "error: --seeds 1000000 must be an integer from 1 to 1,000"
    code, _, err = run("explain", "--logits", ",".join(["1"] * 1001))
    assert code == 2 and "1,001 values: at most 1,000 are explained" in err
    assert err.count("\n") == 1


@pytest.fixture
def no_training(monkeypatch):
    from softclass.jobs import train_predict

    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(train_predict, "train_model", refuse)


# -- predictions are finite or refused ----------------------------------------------------------


def test_predict_on_an_extreme_model_file_is_one_line_not_nan(run, model, tmp_path):
    extreme = tmp_path / "extreme"
    extreme.mkdir()
    for path in model.iterdir():
        (extreme / path.name).write_bytes(path.read_bytes())
    metadata = json.loads((extreme / METADATA_FILE).read_text())
    for feature in metadata["recipe"]["features"]:
        feature["scale"] = 1e-300
    (extreme / METADATA_FILE).write_text(json.dumps(metadata))
    code, out, err = run("predict", extreme, IRIS)
    assert (code, out) == (2, "")
    assert "150 of 150 row(s) get NaN or infinite probabilities (first: row 2)" in err


def test_the_console_script_ends_without_teardown_but_runs_exit_handlers(tmp_path):
    """``python -m softclass`` skips destroying the modules after the command (about 0.45 s of
    torch's alone) but keeps what a normal exit guarantees: the exit handlers run, the output
    is complete and the exit code is the command's."""
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('exit handler ran', flush=True))\n"
        "class Kept:\n"
        "    def __del__(self):\n"
        "        print('torn down', flush=True)\n"
        "kept = Kept()  # destroyed when the interpreter tears __main__ down\n"
        "sys.argv = ['softclass', *sys.argv[1:]]\n"
        "from softclass.cli import script_main\n"
        "script_main()\n"
        "print('not reached')\n"
    )

    def command(*args):
        return subprocess.run(
            [sys.executable, "-c", script, *map(str, args)],
            env=ENVIRONMENT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )

    done = command("compare", "--epochs", "2", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("exit handler ran") and "not reached" not in done.stdout
    assert "torn down" not in done.stdout
    assert "A vs B:" in done.stdout and (tmp_path / "run" / "report.json").is_file()
    failed = command("compare", "--epochs", "0")
    assert failed.returncode == 2 and "exit handler ran" in failed.stdout
    assert "--epochs" in failed.stderr
    # An interpreter without CPython's atexit._run_exitfuncs takes the normal exit.
    script = script.replace(
        "import atexit, sys\n", "import atexit, sys\ndel atexit._run_exitfuncs\n"
    )
    done = command("compare", "--epochs", "2", "--out", tmp_path / "plain")
    assert done.returncode == 0, done.stderr
    assert "exit handler ran" in done.stdout and "torn down" in done.stdout
    assert "not reached" not in done.stdout and (tmp_path / "plain" / "report.json").is_file()
