"""Runs that are killed, interrupted, run twice, or meet a full disk, a read-only directory, a
closed pipe or a diverging loss: each ends with one clear line and an exit code, and never leaves
a half-written model, a temporary file or a stale lock."""

import builtins
import errno
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest
import torch

from softclass import io
from softclass.data import bundled_path
from softclass.data.prepare import prepare_table
from softclass.errors import DataError, ModelFileError, TrainingDiverged
from softclass.jobs.store import load_model, save_model
from softclass.jobs.train_predict import CHECKPOINT_FILE, describe_kept, train_to_directory
from softclass.mlp.designs import get_design
from softclass.training.backends.autograd import Trainer
from softclass.training.config import TrainConfig
from softclass.training.engine import checkpoint_progress

IRIS = bundled_path("iris")
ENVIRONMENT = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
TEMPORARY = re.compile(r"\.(tmp|tmpdir|old|lock)$")

pytestmark = pytest.mark.usefixtures("one_thread")


def _leftovers(root):
    """Temporary files and directories, lock files, anywhere under ``root``."""
    return sorted(str(path) for path in Path(root).rglob(".*") if TEMPORARY.search(path.name))


def _softclass(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "softclass", *map(str, args)],
        env=ENVIRONMENT,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def _wait_for(condition, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended early: {process.returncode}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- SIGKILL at any moment ------------------------------------------------------------------------

# A warm process (torch imported once) that forks a child per job and SIGKILLs it after the
# job's delay: hundreds of milliseconds per kill instead of seconds of interpreter start-up.
_KILLER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import torch
    torch.set_num_threads(1)
    from softclass import cli
    from softclass.data import Recipe, load_bundled
    from softclass.jobs.store import save_model
    from softclass.mlp.designs import get_design
    from softclass.mlp.model import MLPConfig, build_mlp
    from softclass.training.config import TrainConfig
    import softclass.jobs.train_predict, softclass.jobs.compare, softclass.data.reading

    models = {hidden: build_mlp(MLPConfig(4, 3, (hidden,)), seed=hidden) for hidden in (7, 9)}

    def child(job):  # polars only after the fork: its thread pool does not survive one
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        if job["kind"] == "save":  # a hidden-7 and a hidden-9 model in turn, as fast as it can
            recipe = Recipe.fit(load_bundled("iris"))
            for saves in range(10**9):
                hidden = (7, 9)[saves % 2]
                save_model(job["out"], models[hidden], get_design("A"), recipe, TrainConfig(),
                           {"epochs": hidden})
        sys.argv = ["softclass", *job["argv"]]
        cli.main()

    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                child(job)
            finally:
                os._exit(0)
        deadline = time.monotonic() + job["delay"]
        done, status = os.waitpid(pid, os.WNOHANG)
        while not done and time.monotonic() < deadline:
            time.sleep(0.002)
            done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        print(json.dumps({"killed": os.WIFSIGNALED(status)}), flush=True)
    """
)


@pytest.fixture
def killer():
    """``kill(job) -> bool``: run the job in a forked child, SIGKILL it after ``job["delay"]``
    seconds; True when the kill landed (False: the job had finished)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=ENVIRONMENT,
    )

    def kill(job):
        process.stdin.write(json.dumps(job) + "\n")
        process.stdin.flush()
        return json.loads(process.stdout.readline())["killed"]

    yield kill
    process.stdin.close()
    process.wait(timeout=60)


@pytest.mark.slow
def test_sigkill_while_saving_never_leaves_a_mixed_or_unreadable_model(tmp_path, killer):
    directory = tmp_path / "model"
    killer({"kind": "save", "out": str(directory), "delay": 1.0})
    landed_inside_a_save = 0
    for delay in [0.05 * step for step in range(2, 18)]:  # the child saves every ~20-50 ms
        assert killer({"kind": "save", "out": str(directory), "delay": delay})
        saved = load_model(directory)  # weights and metadata always of the same save
        assert saved.history_summary["epochs"] == saved.model_config.hidden[0]
        landed_inside_a_save += bool(_leftovers(tmp_path))
    assert landed_inside_a_save > 0
    saved = load_model(directory)
    save_model(directory, saved.model, saved.design, saved.recipe, saved.train_config, {})
    assert _leftovers(tmp_path) == []  # the next save cleared what the killed ones left


def _train_job(out, epochs, delay, *extra):
    argv = ["train", str(IRIS), "--out", str(out), "--epochs", str(epochs), *extra]
    return {"kind": "train", "argv": argv, "delay": delay}


@pytest.mark.slow
def test_sigkill_during_training_never_leaves_an_unreadable_model(tmp_path, killer):
    """Killed at varied moments, a fresh run leaves nothing, a resumable checkpoint, or a complete
    model; a run continuing a saved model leaves that model or the complete new one."""
    # Long enough that training, not start-up, fills most of the run (the batched engine trains
    # Iris's 4-7-3 network in about a millisecond per epoch, checkpoint included).
    epochs = 1000
    durations = []
    for number in range(2):  # the first run may compile the kernels: time the second
        started = time.monotonic()
        assert not killer(_train_job(tmp_path / f"timed{number}", epochs, 600.0))  # finishes
        durations.append(time.monotonic() - started)
    duration = min(durations)  # kill at fractions of it: the machine may be busy
    outcomes = set()
    for number, fraction in enumerate([0.05, 0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]):
        out = tmp_path / f"fresh{number}"
        killer(_train_job(out, epochs, fraction * duration))
        if (out / "model.json").exists():
            assert load_model(out).history_summary["epochs"] == epochs
            outcomes.add("complete")
        elif (out / CHECKPOINT_FILE).exists():  # resumable
            assert checkpoint_progress(out / CHECKPOINT_FILE)[0] >= 1
            with pytest.raises(ModelFileError, match="missing file"):
                load_model(out)
            outcomes.add("checkpoint")
        else:  # absent, or empty but for temporaries: a new run starts there afresh
            assert not out.exists() or [p for p in out.iterdir() if p.name[0] != "."] == []
            outcomes.add("nothing")
    assert "checkpoint" in outcomes, outcomes  # some kills landed during the training

    out = tmp_path / "continued"
    assert not killer(_train_job(out, 5, 600.0))  # finishes: a good 5-epoch model
    model_epochs = 5
    for fraction in [0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]:
        checkpoint_epoch = checkpoint_progress(out / CHECKPOINT_FILE)[0]
        epochs = checkpoint_epoch + 10
        killer(_train_job(out, epochs, fraction * duration, "--resume"))
        found = load_model(out).history_summary["epochs"]
        assert found in (model_epochs, epochs)  # the earlier model, or the complete new one
        assert checkpoint_epoch <= checkpoint_progress(out / CHECKPOINT_FILE)[0] <= epochs
        model_epochs = found
    epochs = checkpoint_progress(out / CHECKPOINT_FILE)[0] + 1
    assert not killer(_train_job(out, epochs, 600.0, "--resume"))  # a run that finishes...
    assert load_model(out).history_summary["epochs"] == epochs
    assert [name for name in _leftovers(tmp_path) if "continued" in name] == []  # ...cleans up


# -- SIGINT and SIGTERM: 130 and 143, one line on what was kept, no temporaries -------------------


@pytest.mark.slow
@pytest.mark.parametrize("interrupt", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_train_names_the_kept_checkpoint(tmp_path, interrupt):
    out = tmp_path / "model"
    process = _softclass(
        "train", IRIS, "--out", out, "--epochs", 100000, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(lambda: (out / CHECKPOINT_FILE).exists(), process)
    time.sleep(0.2)
    process.send_signal(interrupt)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + interrupt
    name = signal.Signals(interrupt).name
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(
        rf"interrupted by {name}: kept the checkpoint of epoch (\d+) of 100000 in "
        rf"{re.escape(str(out / CHECKPOINT_FILE))} \(train again with --resume to continue it\)",
        last,
    )
    assert match, err
    assert checkpoint_progress(out / CHECKPOINT_FILE)[0] == int(match[1])
    assert "Traceback" not in err
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("interrupt", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_compare_exits_with_the_signal_and_leaves_nothing(tmp_path, interrupt):
    out = tmp_path / "run"
    process = _softclass(
        "compare", "--out", out, "--epochs", 100000, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(lambda: out.exists(), process)  # claimed and checked: training starts
    time.sleep(0.5)
    process.send_signal(interrupt)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + interrupt
    name = signal.Signals(interrupt).name
    assert err.strip().splitlines()[-1] == (
        f"interrupted by {name}: nothing was kept (compare keeps no checkpoints: run it again)"
    )
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_an_interrupted_compare_while_writing_keeps_nothing_of_the_run(run, tmp_path, monkeypatch):
    from softclass.jobs import store

    out = tmp_path / "run"
    real_write = Path.write_text

    def write_then_interrupt(path, text, *args, **kwargs):
        real_write(path, text, *args, **kwargs)
        if path.name == store.METADATA_FILE and path.parent.name.startswith(".B."):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while models/B is half built

    monkeypatch.setattr(Path, "write_text", write_then_interrupt)
    code, _, err = run("compare", "--epochs", 2, "--out", out)
    assert code == 130
    assert err.strip().splitlines()[-1] == (
        "interrupted by SIGINT: nothing was kept (compare keeps no checkpoints: run it again)"
    )
    assert not out.exists()  # one unit: models A-D, report and figures together or nothing
    assert _leftovers(tmp_path) == []


def test_a_stop_whose_exception_was_lost_still_keeps_nothing_of_the_run(run, tmp_path, monkeypatch):
    """The handler's Interrupted can be dropped (a signal handled inside a finalizer): the stop
    request it recorded still keeps the run's directory from being swapped into place."""
    from softclass.errors import STOP_REQUESTS
    from softclass.jobs import store

    out = tmp_path / "run"
    real_write = Path.write_text

    def write_then_lose_a_stop(path, text, *args, **kwargs):
        real_write(path, text, *args, **kwargs)
        if path.name == store.METADATA_FILE and path.parent.name.startswith(".B."):
            STOP_REQUESTS.append(signal.SIGINT)  # what the handler records before raising

    monkeypatch.setattr(Path, "write_text", write_then_lose_a_stop)
    code, _, err = run("compare", "--epochs", 2, "--out", out)
    assert code == 130
    assert err.strip().splitlines()[-1] == (
        "interrupted by SIGINT: nothing was kept (compare keeps no checkpoints: run it again)"
    )
    assert not out.exists()
    assert _leftovers(tmp_path) == [] and STOP_REQUESTS == []


def test_a_directory_is_not_swapped_into_place_after_a_stop_request(tmp_path):
    from softclass.errors import STOP_REQUESTS, Interrupted

    out = tmp_path / "model"
    try:
        with pytest.raises(Interrupted):
            with io.atomic_directory(out) as staging:
                (staging / "model.json").write_text("{}")
                STOP_REQUESTS.append(signal.SIGTERM)
    finally:
        STOP_REQUESTS.clear()
    assert not out.exists() and _leftovers(tmp_path) == []


class _Interrupted(BaseException):
    pass


def test_an_interruption_while_compare_waits_for_its_file_thread_lets_the_thread_end_first():
    """Ctrl-C while the main thread waits for the thread writing models into the run's staging
    directory: the interruption is raised only once the writes ended (the staging directory is
    then removed whole, never under a thread still writing into it)."""
    import threading

    from softclass.jobs.file_thread import FileThread

    release, ended = threading.Event(), threading.Event()

    def write():
        release.wait(10)
        time.sleep(0.05)
        ended.set()

    def interrupt(main):
        time.sleep(0.2)
        signal.pthread_kill(main, signal.SIGINT)
        time.sleep(0.2)
        release.set()

    def handler(signum, frame):
        raise _Interrupted

    previous = signal.signal(signal.SIGINT, handler)
    try:
        writer = FileThread(write)
        writer.start()
        threading.Thread(target=interrupt, args=(threading.get_ident(),)).start()
        with pytest.raises(_Interrupted):
            writer.finish()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert ended.is_set()
    writer.join(5)
    assert not writer.is_alive()


def _on_streamed_writes(monkeypatch, name, write):
    """Files opened for writing whose name is a temporary of ``name`` (``.name.…``) call
    ``write(handle, data)`` instead of writing: predict streams its chunks through ``open``."""
    real_open = builtins.open

    class Streamed:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            return write(self.handle, data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def open_(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode and Path(file).name.startswith(f".{name}."):
            return Streamed(handle)
        return handle

    monkeypatch.setattr(builtins, "open", open_)


@pytest.mark.parametrize("interrupt", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_predict_output_keeps_the_earlier_file(
    run, tmp_path, monkeypatch, interrupt
):
    model_dir = tmp_path / "model"
    assert run("train", IRIS, "--epochs", 2, "--out", model_dir)[0] == 0
    output = tmp_path / "predictions.csv"
    output.write_text("earlier predictions\n")

    def half_then_signal(handle, data):
        handle.write(data[: len(data) // 2])
        os.kill(os.getpid(), interrupt)  # the handler raises on the next bytecode
        handle.write(data[len(data) // 2 :])

    _on_streamed_writes(monkeypatch, output.name, half_then_signal)
    code, _, err = run("predict", model_dir, IRIS, "--output", output)
    assert code == 128 + interrupt
    assert err.strip().splitlines()[-1] == (
        f"interrupted by {signal.Signals(interrupt).name}: nothing was written to {output} (an "
        "earlier file there is kept)"
    )
    assert output.read_text() == "earlier predictions\n"
    assert _leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


# -- two runs, one --out --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "compare"])
def test_a_second_run_on_the_same_out_is_refused_at_once(run, tmp_path, command):
    out = tmp_path / "out"
    data = [IRIS] if command == "train" else []
    first = _softclass(command, *data, "--out", out, "--epochs", 100000, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: (tmp_path / ".out.lock").exists() and out.exists(), first)
        started = time.monotonic()
        # --overwrite: past the check of what --out holds (the first run's checkpoint) to the lock
        code, _, err = run(command, *data, "--out", out, "--epochs", 2, "--overwrite")
        assert time.monotonic() - started < 20  # at once, not after training
        assert code == 2
        assert err.strip() == (
            f"error: {out} is in use by another softclass run (pid {first.pid}): wait for it to "
            "finish or choose another output directory"
        )
    finally:
        first.kill()
        first.wait()
    with io.output_lock(out):  # the killed run left no stale lock
        pass


# -- --out that cannot be written: checked before training ----------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started although --out cannot be written")

    monkeypatch.setattr(Trainer, "initialize", refuse)


@pytest.mark.parametrize("command", ["train", "compare"])
def test_out_that_is_a_file_is_one_line_before_training(run, tmp_path, no_training, command):
    out = tmp_path / "out"
    out.write_text("a file")
    data = [IRIS] if command == "train" else []
    code, _, err = run(command, *data, "--out", out, "--epochs", 2)
    assert code == 2
    assert err.strip() == f"error: {out} is a file, expected a directory"
    assert out.read_text() == "a file"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["train", "compare"])
def test_a_read_only_out_is_one_line_before_training(
    run, tmp_path, monkeypatch, no_training, command
):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    real_mkstemp = io.tempfile.mkstemp

    def read_only_mount(*args, dir=None, **kwargs):
        if Path(dir) == read_only or read_only in Path(dir).parents:
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(io.tempfile, "mkstemp", read_only_mount)
    data = [IRIS] if command == "train" else []
    out = read_only / "out"
    code, _, err = run(command, *data, "--out", out, "--epochs", 2)
    assert code == 2
    assert err.strip() == (
        f"error: {read_only} is not writable (read-only file system); cannot write "
        f"{read_only / '.softclass-write-probe'}"
    )
    assert list(read_only.iterdir()) == []


# -- a full disk ----------------------------------------------------------------------------------


def _full_disk_for(monkeypatch, name):
    """Writes of ``name`` (through its temporary) fail with ENOSPC after half the bytes."""
    real_write = Path.write_bytes

    def write(path, data):
        if path.name.startswith(f".{name}."):
            real_write(path, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", write)

    def full(handle, data):
        handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", handle.name)

    _on_streamed_writes(monkeypatch, name, full)


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_model(
    run, tmp_path, monkeypatch
):
    out = tmp_path / "model"
    assert run("train", IRIS, "--epochs", 3, "--out", out)[0] == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    _full_disk_for(monkeypatch, CHECKPOINT_FILE)
    code, _, err = run("train", IRIS, "--epochs", 6, "--out", out, "--resume")
    assert code == 2
    assert err.strip() == (
        f"error: no space left on the device holding {out} while writing checkpoint.pt; nothing "
        "was replaced (free some space and run again)"
    )
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert _leftovers(tmp_path) == []


def test_a_full_disk_under_predict_output_is_one_line(run, tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    assert run("train", IRIS, "--epochs", 2, "--out", model_dir)[0] == 0
    _full_disk_for(monkeypatch, "predictions.csv")
    output = tmp_path / "predictions.csv"
    code, _, err = run("predict", model_dir, IRIS, "--output", output)
    assert code == 2
    assert err.strip().startswith(f"error: no space left on the device holding {tmp_path}")
    assert not output.exists() and _leftovers(tmp_path) == []


@pytest.fixture(scope="module")
def saved_iris(tmp_path_factory):
    out = tmp_path_factory.mktemp("saved") / "model"
    prepared = prepare_table(pl.read_csv(IRIS))
    train_to_directory(prepared, get_design("A"), out, TrainConfig(epochs=2))
    return out


def test_predict_to_a_full_device_on_stdout_fails_with_one_line(saved_iris):
    with open("/dev/full", "w") as full:  # every write: ENOSPC
        process = _softclass("predict", saved_iris, IRIS, stdout=full, stderr=subprocess.PIPE)
        _, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert err.decode().strip() == (
        "error: no space left on the device behind standard output: the output is incomplete"
    )


def test_predict_into_a_closed_pipe_ends_quietly_with_141(saved_iris):
    reader, writer = os.pipe()
    os.close(reader)  # like `| head` that has already exited
    process = _softclass("predict", saved_iris, IRIS, stdout=writer, stderr=subprocess.PIPE)
    os.close(writer)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141
    assert err == b""


# -- divergence -----------------------------------------------------------------------------------


def test_a_diverging_train_stops_naming_the_epoch_and_saves_no_model(run, tmp_path):
    out = tmp_path / "model"
    code, _, err = run("train", IRIS, "--out", out, "--epochs", 50, "--lr", "1e6")
    assert code == 2
    match = re.fullmatch(
        r"error: training diverged at epoch (\d+) \(design A\): the training loss is \S+.*; "
        r"lower the learning rate \(now 1e\+06, --lr\) or scale the features "
        r"\(--normalize zscore\); (.*)",
        err.strip(),
    )
    assert match, err
    assert not (out / "model.json").exists()
    epoch = int(match[1])
    if epoch > 1:  # the last sound epoch's checkpoint is kept, and said so
        assert checkpoint_progress(out / CHECKPOINT_FILE)[0] == epoch - 1
        assert match[2].startswith(f"kept the checkpoint of epoch {epoch - 1} of 50")
    else:
        assert match[2] == "nothing was kept (no epoch finished, no checkpoint written)"
        assert not out.exists()


def test_a_loss_that_explodes_after_sound_epochs_keeps_their_checkpoint(tmp_path, monkeypatch):
    prepared = prepare_table(pl.read_csv(IRIS))
    real_run_epoch = Trainer.run_epoch

    epochs_run = []

    def explode_at_epoch_4(trainer):
        epochs_run.append(len(epochs_run) + 1)
        if len(epochs_run) == 4:
            with torch.no_grad():
                list(trainer.model_.parameters())[-1].fill_(math.nan)
        return real_run_epoch(trainer)

    monkeypatch.setattr(Trainer, "run_epoch", explode_at_epoch_4)
    out = tmp_path / "m"
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 4 \(design A\)"):
        train_to_directory(
            prepared, get_design("A"), out, TrainConfig(epochs=10, backend="autograd")
        )
    assert checkpoint_progress(out / CHECKPOINT_FILE)[0] == 3
    assert describe_kept(out).startswith(f"kept the checkpoint of epoch 3 of 10 in {out}")
    assert not (out / "model.json").exists()


def test_values_of_1e30_diverge_with_a_hint_to_scale(tmp_path):
    """Unscaled values of 1e30 through a relu layer give logits near 1e30: the loss explodes."""
    rows = 40
    table = pl.DataFrame(
        {
            "big": [1e30 * (index % 7 - 3) for index in range(rows)],
            "small": [float(index % 5) for index in range(rows)],
            "class": ["a", "b"] * (rows // 2),
        }
    )
    prepared = prepare_table(table, normalization="divide", divisors={"big": 1.0, "small": 1.0})
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 1 .*scale the features"):
        train_to_directory(
            prepared, get_design("A"), tmp_path / "m", TrainConfig(epochs=3), activation="relu"
        )
    assert not (tmp_path / "m").exists()


def test_a_column_near_1e200_is_refused_before_training(tmp_path, no_training):
    table = pl.DataFrame(
        {"x": [1e200, -1e200, 3e200, 1.0] * 10, "y": [1.0, 2, 3, 4] * 10, "c": ["a", "b"] * 20}
    )
    # Refused while the table is prepared (issue 12: beyond float32 names the row and column),
    # before any training or file.
    with pytest.raises(DataError, match=r"row 2, column 'x': 1e\+200 is outside float32's range"):
        prepare_table(table, "c")
    assert list(tmp_path.iterdir()) == []


# -- stale temporaries of killed runs -------------------------------------------------------------


def test_the_next_run_removes_what_a_killed_run_left(run, tmp_path):
    out = tmp_path / "model"
    assert run("train", IRIS, "--epochs", 2, "--out", out)[0] == 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    tag = f"{io._host_tag()}-{child.pid}"
    stale = [
        out / f".checkpoint.pt.{tag}.k2j3.tmp",
        tmp_path / f".predictions.csv.{tag}.q9.tmp",
        tmp_path / f".model.{tag}.zz.tmpdir",
    ]
    for path in stale:
        path.write_bytes(b"x" * 1000) if path.suffix == ".tmp" else path.mkdir()
    assert run("train", IRIS, "--epochs", 3, "--out", out, "--resume")[0] == 0
    assert run("predict", out, IRIS, "--output", tmp_path / "predictions.csv")[0] == 0
    assert [path for path in stale if path.exists()] == []
    assert _leftovers(tmp_path) == []


def test_file_writes_interrupted_before_they_begin_never_begin():
    """An interruption while the file thread starts (before its writes began) cancels them: the
    staging directory is then removed with nothing writing into it."""
    from softclass.jobs.file_thread import FileThread

    calls = []
    writer = FileThread(lambda: calls.append("wrote"))
    writer.wait()  # the handler's wait, before the thread ran
    writer.start()
    writer.join(5)
    assert calls == [] and not writer.is_alive()
    writer.finish()  # nothing to re-raise
