import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest

from softclass import io
from softclass.errors import OutputBusyError, OutputError
from softclass.io import atomic_path, atomic_write_json, atomic_write_text


def test_atomic_write_text_replaces_content(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_atomic_write_json_round_trips(tmp_path):
    target = tmp_path / "obj.json"
    atomic_write_json(target, {"a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2]}


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_path(target) as temp_path:
        temp_path.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_written_files_get_the_umask_mode_not_a_private_temp_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        target = atomic_write_text(tmp_path / "public.txt", "x")
    finally:
        os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o644


# -- faults: stale temporaries, directories as one unit, locks, unwritable outputs ---------------


def _dead_pid():
    """A pid that ran on this host and is gone: a finished child process."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _stale_name(name, kind, pid):
    return f".{name}.{io._host_tag()}-{pid}.abc123_x.{kind}"


def test_a_failed_write_of_a_dead_process_is_removed_by_the_next_write(tmp_path):
    dead = _dead_pid()
    stale_file = tmp_path / _stale_name("pred.csv", "tmp", dead)
    stale_file.write_bytes(b"half a prediction")
    stale_dir = tmp_path / _stale_name("model", "tmpdir", dead)
    stale_dir.mkdir()
    (stale_dir / "model.json").write_text("{")
    alive = tmp_path / _stale_name("pred.csv", "tmp", os.getpid())  # a write in progress
    alive.write_bytes(b"mine")
    other_host = tmp_path / f".pred.csv.elsewhere-{dead}.abc.tmp"  # maybe alive on its host
    other_host.write_bytes(b"theirs")
    atomic_write_text(tmp_path / "pred.csv", "row\n")
    assert not stale_file.exists()
    assert stale_dir.exists()  # another destination's leftover: left to its own next write
    assert alive.exists() and other_host.exists()
    assert io.remove_stale_temporaries(tmp_path) == 1
    assert not stale_dir.exists()


def test_an_old_directory_left_between_two_renames_is_put_back(tmp_path):
    aside = tmp_path / _stale_name("model", "old", _dead_pid())
    aside.mkdir()
    (aside / "model.json").write_text("{}")
    io.remove_stale_temporaries(tmp_path)
    assert (tmp_path / "model" / "model.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_atomic_directory_replaces_the_whole_directory_and_keeps_other_files(
    tmp_path, monkeypatch, exchange
):
    if not exchange:
        monkeypatch.setattr(io, "_rename_exchange", lambda first, second: False)
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old weights")
    (target / "meta").write_text("old meta")
    (target / "checkpoint.pt").write_text("checkpoint")
    with io.atomic_directory(target, replaced=("weights", "meta")) as staging:
        assert sorted(p.name for p in staging.iterdir()) == ["checkpoint.pt"]
        (staging / "weights").write_text("new weights")
        (staging / "meta").write_text("new meta")
        assert (target / "weights").read_text() == "old weights"  # nothing visible yet
    assert (target / "weights").read_text() == "new weights"
    assert (target / "meta").read_text() == "new meta"
    assert (target / "checkpoint.pt").read_text() == "checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_failure_while_building_a_directory_keeps_the_old_one_whole(
    tmp_path, monkeypatch, exchange
):
    if not exchange:
        monkeypatch.setattr(io, "_rename_exchange", lambda first, second: False)
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old weights")
    (target / "meta").write_text("old meta")
    with (
        pytest.raises(KeyboardInterrupt),
        io.atomic_directory(target, ("weights", "meta")) as staging,
    ):
        (staging / "weights").write_text("new weights")
        raise KeyboardInterrupt  # a Ctrl-C between the two files
    assert (target / "weights").read_text() == "old weights"
    assert (target / "meta").read_text() == "old meta"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failure_of_the_second_rename_puts_the_old_directory_back(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_rename_exchange", lambda first, second: False)
    target = tmp_path / "model"
    target.mkdir()
    (target / "meta").write_text("old")
    real_rename = os.rename

    def failing_rename(source, destination):
        if str(source).endswith(".tmpdir"):
            raise OSError(errno.EIO, "Input/output error")
        real_rename(source, destination)

    monkeypatch.setattr(io.os, "rename", failing_rename)
    with pytest.raises(OutputError, match=r"cannot write .*model: Input/output error"):
        with io.atomic_directory(target, ("meta",)) as staging:
            (staging / "meta").write_text("new")
    assert (target / "meta").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_directory_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "model").write_text("not a directory")
    with pytest.raises(OutputError, match=r"model is a file, expected a directory"):
        with io.atomic_directory(tmp_path / "model"):
            pass


def test_a_full_disk_is_one_clear_line_and_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"epoch 3")

    def full_disk(path, data):
        with open(path, "wb") as handle:
            handle.write(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io.Path, "write_bytes", full_disk)
    with pytest.raises(
        OutputError,
        match=rf"no space left on the device holding {tmp_path} while writing checkpoint.pt; "
        "nothing was replaced",
    ):
        io.atomic_write_bytes(target, b"epoch 4" * 100)
    monkeypatch.undo()
    assert target.read_bytes() == b"epoch 3"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_non_finite_numbers_are_refused_in_json(tmp_path):
    with pytest.raises(OutputError, match="refusing to write a non-finite number"):
        atomic_write_json(tmp_path / "report.json", {"loss": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_a_second_lock_on_the_same_directory_is_refused_at_once(tmp_path):
    with io.output_lock(tmp_path / "out") as lock_path:
        assert lock_path.read_text().strip() == str(os.getpid())
        with pytest.raises(
            OutputBusyError,
            match=rf"out is in use by another softclass run \(pid {os.getpid()}\): wait",
        ):
            with io.output_lock(tmp_path / "out"):
                pass
    assert not lock_path.exists()
    with io.output_lock(tmp_path / "out"):  # released: free again
        pass


def test_a_killed_holder_never_leaves_a_stale_lock(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from softclass.io import output_lock
                with output_lock({str(tmp_path / "out")!r}):
                    print("locked", flush=True)
                    time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusyError, match=rf"\(pid {holder.pid}\)"):
            with io.output_lock(tmp_path / "out"):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / ".out.lock").exists()  # the file stays, the lock does not
    with io.output_lock(tmp_path / "out"):
        pass


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")],
)
def test_output_directory_checks_before_any_work(tmp_path, monkeypatch, code, reason):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"file is a file, expected a directory"):
        io.prepare_output_directory(tmp_path / "file")
    with pytest.raises(OutputError, match=r"cannot write .*file/sub: .*file is a file, not a dir"):
        io.prepare_output_directory(tmp_path / "file" / "sub")
    read_only = tmp_path / "read-only"
    read_only.mkdir()

    def refuse(*args, dir=None, **kwargs):  # what a read-only mount or chmod 555 answers
        raise OSError(code, os.strerror(code), str(dir))

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match=rf"{read_only} is not writable \({reason}\)"):
        io.prepare_output_directory(read_only / "run")


@pytest.mark.parametrize(
    "obj",
    [
        {"a": [1, 2], "b": {"c": [{"x": 1.5, "y": None}, {"x": 2, "y": "é"}], "d": []}, "e": {}},
        [[1, [2, [3]]], {"k": True}],
        {3: "three", 2.5: [1], True: {"t": 1}, None: "none"},
        "plain",
        [],
    ],
)
def test_json_text_is_what_json_reads_back_as_json_dumps_would_write(obj):
    from softclass.io import json_text

    assert json.loads(json_text(obj)) == json.loads(json.dumps(obj))


def test_json_text_keeps_records_on_one_line_and_refuses_nan():
    from softclass.io import json_text

    text = json_text({"history": [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]})
    assert text.splitlines() == [
        "{",
        '  "history": [',
        '    {"epoch": 1, "loss": 0.5},',
        '    {"epoch": 2, "loss": 0.25}',
        "  ]",
        "}",
    ]
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        json_text({"a": [{"b": float("inf")}]})
    with pytest.raises(TypeError, match="keys must be str, int, float, bool or None, not tuple"):
        json_text({(1, 2): [1]})


def _record_fsyncs(monkeypatch):
    """Record the path of every fsync (files and directories) and the swaps, in order."""
    events = []
    real_fsync, real_swap = os.fsync, io._swap_into_place

    def fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        return real_fsync(descriptor)

    def swap(staging, destination):
        events.append(("swap", str(destination)))
        return real_swap(staging, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(io, "_swap_into_place", swap)
    return events


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name descriptors")
def test_a_directory_is_synced_once_whole_before_its_swap_and_writes_inside_skip_theirs(
    tmp_path, monkeypatch
):
    events = _record_fsyncs(monkeypatch)
    out = tmp_path / "run"
    with io.atomic_directory(out) as staging:
        atomic_write_text(staging / "report.html", "<p>")
        atomic_write_json(staging / "report.json", {"a": 1})
        with io.atomic_directory(staging / "models" / "A") as model:
            io.atomic_write_bytes(model / "model.safetensors", b"\0" * 64)
            atomic_write_text(model / "model.json", "{}")
        staged = str(staging)
    swaps = [index for index, (kind, _) in enumerate(events) if kind == "swap"]
    assert [events[index][1] for index in swaps] == [f"{staged}/models/A", str(out)]
    before = [path for kind, path in events[: swaps[-1]] if kind == "fsync"]
    # Nothing synced while the block wrote (the inner model's swap included) ...
    assert all(kind == "swap" for kind, _ in events[: swaps[0] + 1])
    # ... then each file and directory of the finished tree once, then the parent after the swap.
    expected = {
        staged,
        f"{staged}/report.html",
        f"{staged}/report.json",
        f"{staged}/models",
        f"{staged}/models/A",
        f"{staged}/models/A/model.safetensors",
        f"{staged}/models/A/model.json",
    }
    assert sorted(before) == sorted(expected)
    assert [path for kind, path in events[swaps[-1] :] if kind == "fsync"] == [str(tmp_path)]
    assert (out / "models" / "A" / "model.json").read_text() == "{}"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name descriptors")
def test_a_file_written_alone_is_synced_with_its_directory(tmp_path, monkeypatch):
    events = _record_fsyncs(monkeypatch)
    atomic_write_text(tmp_path / "alone.txt", "x")
    synced = [path for kind, path in events if kind == "fsync"]
    assert len(synced) == 2 and synced[0].startswith(str(tmp_path / ".alone.txt."))
    assert synced[1] == str(tmp_path)


def test_a_file_that_cannot_be_synced_fails_the_directory_and_keeps_the_old_one(
    tmp_path, monkeypatch
):
    out = tmp_path / "run"
    with io.atomic_directory(out) as staging:
        atomic_write_text(staging / "old.txt", "old")
    real_fsync = os.fsync

    def failing(descriptor):
        if os.readlink(f"/proc/self/fd/{descriptor}").endswith("b.txt"):
            raise OSError(errno.EIO, "I/O error")
        return real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OutputError, match="I/O error"):
        with io.atomic_directory(out) as staging:
            for name in ("a.txt", "b.txt", "c.txt"):
                atomic_write_text(staging / name, name)
    assert sorted(path.name for path in out.iterdir()) == ["old.txt"]
