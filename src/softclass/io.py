"""Writing files and directories so that a reader sees the old version or the new one, never half.

Every file softclass writes (models, checkpoints, recipes, history, plots, predictions) goes
through here:

- :func:`atomic_path` / :func:`atomic_write_bytes`: the content is written to a temporary file in
  the same directory, flushed and fsynced, then renamed over the destination (``os.replace`` is
  atomic on POSIX).
- :func:`atomic_directory`: a directory that must stay one unit (a model: weights and metadata
  that describe each other) is built in a temporary directory beside it and swapped into place
  in one step (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, undone on failure and
  recovered by the next run if the process died between them).
- Temporary names carry the host and process id (``.model.json.<host>-<pid>.<random>.tmp``):
  leftovers of a process that is gone (killed with SIGKILL, or a power cut) are removed the next
  time anything is written beside them (:func:`remove_stale_temporaries`).
- :func:`output_lock` lets one run at a time write into an output directory (``flock`` on a lock
  file beside it; the kernel releases it when the process dies, so it is never stale), and
  :func:`prepare_output_directory` checks that the directory can be written before any work.

Failures to write become :class:`softclass.errors.OutputError` with one line naming the path and
the cause (``no space left on the device holding ...``, ``... is not writable``).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from softclass.errors import STOP_REQUESTS, Interrupted, OutputBusyError, OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not serialised
    fcntl = None  # type: ignore[assignment]

_TEMP_KINDS = ("tmp", "tmpdir", "old")
# The staging directories of the atomic_directory blocks open in this context. What is written
# inside one is made durable by that block's one sync of the whole tree before the swap, so the
# writes inside skip their own fsyncs (a compare run: 36 fsyncs one after another before, ~0.3 s).
_STAGING: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "softclass_staging", default=()
)
_TEMP_NAME = re.compile(
    r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[A-Za-z0-9_]+\.(?P<kind>tmp|tmpdir|old)$"
)


# -- single files ---------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; on success it is renamed into place.

    For libraries that insist on writing to a path themselves (matplotlib). If the block raises
    (or the process is interrupted), the temporary file is removed and ``destination`` is left
    untouched. Stale temporaries of ``destination`` left by dead processes are removed first.

    Raises:
        OutputError: the directory cannot be created or written, or the device is full.
    """
    destination = Path(destination)
    staged = _staged(destination.parent)
    with translate_os_error(destination):
        destination.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(destination.parent, destination.name)
        # The name is chosen before the file exists and cleaned up in `finally`: an interruption
        # (SIGINT/SIGTERM raise in the CLI) at any instant leaves no temporary behind.
        temp_path: Path | None = None
        try:
            while True:
                temp_path = destination.parent / (
                    f"{_temp_prefix(destination)}{secrets.token_hex(6)}.tmp"
                )
                try:  # mkstemp's creation: exclusive, private until renamed
                    os.close(os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                    break
                except FileExistsError:
                    continue
            yield temp_path
            if not staged:
                with open(temp_path, "rb+") as written:
                    os.fsync(written.fileno())
            os.chmod(temp_path, _default_file_mode())
            os.replace(temp_path, destination)
        finally:
            if temp_path is not None:
                temp_path.unlink(missing_ok=True)
        if not staged:
            _fsync_directory(destination.parent)


def atomic_write_bytes(destination: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``destination`` atomically and return the destination path."""
    with atomic_path(destination) as temp_path:
        temp_path.write_bytes(data)
    return Path(destination)


def atomic_write_text(destination: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``destination`` atomically and return the destination path."""
    return atomic_write_bytes(destination, text.encode("utf-8"))


def json_text(obj: Any) -> str:
    """``obj`` as JSON indented by two spaces, except that a list or object holding no list or
    object stays on one line (a history's epoch record, a short list of numbers).

    Such leaves are written by json's C encoder: a run's histories (tens of thousands of epoch
    records) take a third of the time ``json.dumps(indent=2)`` needs, and a file half the lines.

    Raises:
        ValueError: ``obj`` holds NaN or an infinity. TypeError: a value JSON cannot hold.
    """
    return _json_lines(obj, 0)


def _json_lines(obj: Any, level: int) -> str:
    if isinstance(obj, dict):
        values: Any = obj.values()
    elif isinstance(obj, list | tuple):
        values = obj
    else:
        return json.dumps(obj, allow_nan=False)
    if not values or not any(isinstance(value, dict | list | tuple) for value in values):
        return json.dumps(obj, allow_nan=False, separators=(", ", ": "))
    inner = "\n" + "  " * (level + 1)
    if isinstance(obj, dict):
        items = [f"{_json_key(key)}: {_json_lines(value, level + 1)}" for key, value in obj.items()]
        opening, closing = "{", "}"
    else:
        items = [_json_lines(value, level + 1) for value in obj]
        opening, closing = "[", "]"
    return opening + inner + ("," + inner).join(items) + "\n" + "  " * level + closing


def _json_key(key: Any) -> str:
    """An object key as json writes it (numbers, booleans and None become strings)."""
    if not isinstance(key, str):
        if not isinstance(key, int | float | bool) and key is not None:
            raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")
        key = json.dumps(key, allow_nan=False)
    return json.dumps(key)


def atomic_write_json(destination: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``destination`` atomically.

    Raises:
        OutputError: ``obj`` holds NaN or an infinity (not JSON; a reader would refuse the
            file), or the file cannot be written.
    """
    try:
        text = json_text(obj)
    except ValueError as error:
        raise OutputError(
            f"{destination}: refusing to write a non-finite number (NaN or infinity) to JSON "
            f"({error})"
        ) from error
    return atomic_write_text(destination, text + "\n")


# -- directories ----------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_directory(
    destination: str | os.PathLike[str], replaced: Collection[str] = ()
) -> Iterator[Path]:
    """Yield an empty staging directory beside ``destination``; on success it takes its place.

    Files the block writes into the staging directory appear in ``destination`` together, in one
    step: a reader (or a process killed at any moment) sees either the complete old directory or
    the complete new one. Entries of an existing ``destination`` whose names are not in
    ``replaced`` are carried over (as hard links, so a checkpoint beside a model stays). If the
    block raises or the process is interrupted, the staging directory is removed and
    ``destination`` is untouched.

    Raises:
        OutputError: ``destination`` is a file, or its parent cannot be written, or the device
            is full.
    """
    destination = Path(destination)
    if destination.is_symlink():  # swap the directory it names, never the link itself
        destination = destination.resolve()
    with translate_os_error(destination):
        if destination.exists() and not destination.is_dir():
            raise OutputError(f"{destination} is a file, expected a directory")
        destination.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(destination.parent, destination.name)
        staging = Path(
            tempfile.mkdtemp(
                prefix=_temp_prefix(destination), suffix=".tmpdir", dir=destination.parent
            )
        )
        staged = _staged(destination.parent)
        try:
            if destination.is_dir():
                _carry_over(destination, staging, set(replaced))
            token = _STAGING.set((*_STAGING.get(), os.path.abspath(staging)))
            try:
                yield staging
            finally:
                _STAGING.reset(token)
            if STOP_REQUESTS:  # a stop whose exception was lost on the way: keep nothing
                raise Interrupted(STOP_REQUESTS[0])
            if not staged:  # inside another staging directory: its sync covers this one
                _fsync_tree(staging)
            os.chmod(staging, 0o777 & ~_umask())
            _swap_into_place(staging, destination)
            if not staged:
                _fsync_directory(destination.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _carry_over(source: Path, staging: Path, replaced: set[str]) -> None:
    """Hard-link (copy where links are refused) the entries of ``source`` into ``staging``."""
    for entry in source.iterdir():
        if entry.name in replaced or _TEMP_NAME.match(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, staging / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, staging / entry.name)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    if Path(source).is_symlink():
        os.symlink(os.readlink(source), target)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _swap_into_place(staging: Path, destination: Path) -> None:
    """Put ``staging`` at ``destination``; an existing destination ends up at ``staging``."""
    if not destination.exists():
        os.rename(staging, destination)
        return
    if _rename_exchange(staging, destination):
        return
    # No atomic exchange here: move the old directory aside, then the new one in. A process
    # that dies in between leaves the old one as ``.<name>.<host>-<pid>.<random>.old``, which
    # remove_stale_temporaries puts back.
    aside = Path(
        tempfile.mkdtemp(prefix=_temp_prefix(destination), suffix=".old", dir=destination.parent)
    )
    os.rename(destination, aside)
    try:
        os.rename(staging, destination)
    except BaseException:
        os.rename(aside, destination)
        raise
    os.rename(aside, staging)


_RENAME_EXCHANGE = 2  # from <linux/fs.h>
_AT_FDCWD = -100


def _rename_exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


# -- stale temporaries ----------------------------------------------------------------------------


def remove_stale_temporaries(directory: str | os.PathLike[str], name: str | None = None) -> int:
    """Remove temporaries in ``directory`` left by dead processes of this host; return how many.

    Only names made by this module count (``.<name>.<host>-<pid>.<random>.tmp``, ``.tmpdir``,
    ``.old``) and only when ``<host>`` is this machine and process ``<pid>`` no longer runs; with
    ``name`` only the temporaries of that destination. A ``.old`` directory whose destination is
    missing (a process died between the two renames of :func:`atomic_directory`) is put back.
    """
    directory = Path(directory)
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    removed = 0
    host = _host_tag()
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or match["host"] != host or (name is not None and match["name"] != name):
            continue
        if _process_alive(int(match["pid"])):
            continue
        path = Path(entry.path)
        original = directory / match["name"]
        try:
            if match["kind"] == "old" and not original.exists():
                os.rename(path, original)
            elif entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed += 1
    return removed


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is a temporary of this module (``.<name>.<host>-<pid>.<random>.tmp``)."""
    return _TEMP_NAME.match(name) is not None


def temporary_path(destination: str | os.PathLike[str]) -> Path:
    """A fresh temporary name beside ``destination`` (not created): removed as stale by the next
    writer once this process is gone, so a file kept there only while the process runs."""
    destination = Path(destination)
    return destination.parent / f"{_temp_prefix(destination)}{secrets.token_hex(6)}.tmp"


def write_all(descriptor: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``descriptor``, continuing after short writes.

    A buffered stream may accept part of a write and drop the rest without an error (a full
    disk); here each ``write(2)`` is checked, so the caller learns of every byte not written.

    Raises:
        OSError: the write failed (EPIPE when the reader went away, ENOSPC on a full device).
    """
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        if written <= 0:
            raise OSError(errno.EIO, "the device accepted no bytes")
        view = view[written:]


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"


def _temp_prefix(destination: Path) -> str:
    return f".{destination.name}.{_host_tag()}-{os.getpid()}."


# -- the output directory of a run ---------------------------------------------------------------


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold an exclusive lock on ``directory`` as an output directory; yield the lock file's path.

    The lock is ``flock`` on ``.<name>.lock`` beside the directory (created if needed, removed on
    release). The kernel drops it when the process ends in any way, so a killed run never leaves
    a stale lock; a second run asking for the same directory is refused at once.

    Raises:
        OutputBusyError: another process holds the lock (its pid is named when known).
        OutputError: the lock file cannot be created (the parent is not writable).
    """
    directory = Path(directory)
    lock_path = directory.parent / f".{directory.name}.lock"
    if fcntl is None:  # pragma: no cover
        yield lock_path
        return
    with translate_os_error(lock_path):
        directory.parent.mkdir(parents=True, exist_ok=True)
        descriptor = _acquire(lock_path, directory)
    try:
        yield lock_path
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()
        os.close(descriptor)


def _acquire(lock_path: Path, directory: Path) -> int:
    """Open and flock ``lock_path``; retry if another process removed it meanwhile."""
    while True:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 64).decode("ascii", "replace").strip()
            os.close(descriptor)
            raise OutputBusyError(
                f"{directory} is in use by another softclass run"
                + (f" (pid {holder})" if holder.isdigit() else "")
                + ": wait for it to finish or choose another output directory"
            ) from None
        except BaseException:
            os.close(descriptor)
            raise
        try:
            same_file = os.fstat(descriptor).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode("ascii"))
            return descriptor
        os.close(descriptor)  # the holder released and removed it between our open and flock


def prepare_output_directory(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` if needed and prove it (and its parent) writable, before any work.

    Stale temporaries of dead processes inside it are removed.

    Raises:
        OutputError: ``directory`` is a file, or it or its parent cannot be written.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory} is a file, expected a directory")
    with translate_os_error(directory):
        directory.mkdir(parents=True, exist_ok=True)
    for place in (directory.parent, directory):
        with translate_os_error(place / ".softclass-write-probe"):
            handle, probe = tempfile.mkstemp(prefix=_temp_prefix(place / "probe"), dir=place)
            os.close(handle)
            os.unlink(probe)
    remove_stale_temporaries(directory)
    return directory


@contextlib.contextmanager
def claim_output_directory(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Lock ``directory`` for this run and check it writable (:func:`output_lock`,
    :func:`prepare_output_directory`); yield it.

    If the block fails and ``directory`` was created here and is still empty, it is removed, so
    a run that wrote nothing leaves nothing behind.

    Raises:
        OutputBusyError: another run holds the directory.
        OutputError: it is a file, or it or its parent is not writable.
    """
    directory = Path(directory)
    with output_lock(directory):
        created = not directory.exists()
        try:
            prepare_output_directory(directory)
            yield directory
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only succeeds while it is empty
            raise


@contextlib.contextmanager
def translate_os_error(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an OSError raised while writing ``path`` into a one-line :class:`OutputError`."""
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        raise OutputError(describe_write_error(error, Path(path)), error.errno) from error


def describe_write_error(error: OSError, path: Path) -> str:
    """One line saying why ``path`` could not be written: full device, read-only, denied..."""
    where = Path(error.filename) if isinstance(error.filename, str) else path
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        cause = "no space left" if error.errno == errno.ENOSPC else os.strerror(error.errno)
        return (
            f"{cause.lower()} on the device holding {path.parent} while writing {path.name}; "
            "nothing was replaced (free some space and run again)"
        )
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason = "read-only file system" if error.errno == errno.EROFS else "permission denied"
        return f"{_nearest_existing(where)} is not writable ({reason}); cannot write {path}"
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        blocking = next((part for part in (path, *path.parents) if part.is_file()), where)
        return f"cannot write {path}: {blocking} is a file, not a directory"
    return f"cannot write {path}: {error.strerror or error}"


def _nearest_existing(path: Path) -> Path:
    """``path`` or the nearest ancestor that exists (the one whose permissions stopped us)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate if candidate.is_dir() else candidate.parent
    return path


# -- helpers --------------------------------------------------------------------------------------


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_file_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask); mkstemp would leave 0o600."""
    return 0o666 & ~_umask()


def _staged(directory: Path) -> bool:
    """``directory`` lies in the staging directory of an enclosing :func:`atomic_directory`."""
    path = os.path.abspath(directory)
    return any(os.path.commonpath((path, root)) == root for root in _STAGING.get())


def _fsync_tree(directory: Path) -> None:
    """fsync every regular file and directory under ``directory``, itself included. The calls
    run concurrently: the file system then commits them together, where one after another each
    waits for a commit of its own (30 small files: 0.12 s in turn, 0.01-0.02 s together)."""
    files, directories = [], [directory]
    for root, names, entries in os.walk(directory):
        directories += [path for name in names if not (path := Path(root, name)).is_symlink()]
        paths = [Path(root, name) for name in entries]
        files += [path for path in paths if path.is_file() and not path.is_symlink()]
    if len(files) + len(directories) <= 2:
        for path in files:
            _fsync_file(path)
        for path in directories:
            _fsync_directory(path)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(16, len(files) + len(directories))) as pool:
        done = [pool.submit(_fsync_file, path) for path in files]
        done += [pool.submit(_fsync_directory, path) for path in directories]
        for future in done:
            future.result()  # a file that cannot be synced fails the block, as in turn


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as written:
        os.fsync(written.fileno())


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable where the platform allows opening a directory."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
