"""The compiled-code cache (issue 14): nothing is loaded from it unless it is private, the user's,
and byte for byte what softclass built. Planted, truncated, foreign or other-writable libraries are
never loaded (a planted library's constructor would write a marker file); they are rebuilt."""

import hashlib
import os
import stat
import subprocess
import sys
import warnings

import pytest

from softclass.kernels import native

ANSWER_SOURCE = "int softclass_test_answer(void) { return 42; }\n"
# A library that announces itself the moment it is loaded (before any of its functions is called).
PLANTED_SOURCE = """
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *marker = fopen(MARKER, "w");
    if (marker) { fputs("constructor ran", marker); fclose(marker); }
}
int softclass_test_answer(void) { return 666; }
"""
FLAGS = ("-O0", "-fPIC", "-shared")
SYMBOLS = ("softclass_test_answer",)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache" / "softclass"
    monkeypatch.setenv("SOFTCLASS_CACHE_DIR", str(directory))
    monkeypatch.delenv("SOFTCLASS_NATIVE", raising=False)
    return directory


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "answer.c"
    path.write_text(ANSWER_SOURCE)
    return path


def _load(source, failures=None):
    failures = [] if failures is None else failures
    loaded = native.load_compiled(source, FLAGS, (), failures, SYMBOLS)
    assert loaded is not None, failures
    return loaded


def _compile(tmp_path, text, output, marker=None):
    source = tmp_path / f"source-of-{output.name}.c"
    source.write_text(text)
    define = [f'-DMARKER="{marker}"'] if marker else []
    subprocess.run(["cc", *FLAGS, *define, "-o", str(output), str(source)], check=True)
    return output


def _cached(cache):
    """(library path, hash record path) of the one library in the cache."""
    (record,) = cache.glob("answer-*.sha256")
    digest = record.read_text().strip()
    return cache / f"{record.stem}-{digest[:16]}.so", record


def _plant(cache, tmp_path, marker, mode=0o600):
    """Replace the cached library by one whose constructor writes ``marker``, with a hash record
    that matches it (as an attacker with write access to the directory would)."""
    library, record = _cached(cache)
    planted = _compile(tmp_path, PLANTED_SOURCE, tmp_path / "planted.so", marker)
    digest = hashlib.sha256(planted.read_bytes()).hexdigest()
    for path in (library, record):
        path.unlink()
    target = cache / f"{record.stem}-{digest[:16]}.so"
    target.write_bytes(planted.read_bytes())
    record.write_text(digest + "\n")
    for path in (target, record):
        os.chmod(path, mode)
    return target


def test_the_cache_is_private_whatever_the_umask(cache, source):
    previous = os.umask(0)
    try:
        assert _load(source).softclass_test_answer() == 42
    finally:
        os.umask(previous)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    library, record = _cached(cache)
    assert stat.S_IMODE(library.stat().st_mode) == 0o600
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert record.read_text().strip() == hashlib.sha256(library.read_bytes()).hexdigest()
    assert not list(cache.glob(".*")), "temporary files are left behind"


def test_a_verified_library_is_loaded_without_rebuilding(cache, source, monkeypatch):
    _load(source)
    monkeypatch.setattr(native.subprocess, "run", lambda *a, **k: pytest.fail("rebuilt"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", native.NativeCacheWarning)
        assert _load(source).softclass_test_answer() == 42


def test_a_library_planted_in_an_other_writable_cache_never_runs(cache, source, tmp_path):
    _load(source)
    marker = tmp_path / "constructor-ran"
    _plant(cache, tmp_path, marker)
    os.chmod(cache, 0o777)
    with pytest.warns(native.NativeCacheWarning, match=r"is writable by others \(mode 0777\)"):
        loaded = _load(source)
    assert loaded.softclass_test_answer() == 42
    assert not marker.exists()


def test_an_other_writable_library_is_not_loaded_but_rebuilt(cache, source, tmp_path):
    _load(source)
    marker = tmp_path / "constructor-ran"
    _plant(cache, tmp_path, marker, mode=0o666)
    with pytest.warns(native.NativeCacheWarning, match=r"is writable by others \(mode 0666\)"):
        assert _load(source).softclass_test_answer() == 42
    assert not marker.exists()


def test_files_of_another_user_are_not_trusted(tmp_path):
    status = os.stat(tmp_path)
    foreign = os.stat_result((status.st_mode, *status[1:4], os.geteuid() + 1, *status[5:]))
    assert native._untrusted(foreign, "directory") == (
        f"owned by uid {os.geteuid() + 1}, not by this user (uid {os.geteuid()})"
    )
    assert native._untrusted(status, "file") == "not a file"
    assert native._untrusted(status, "directory") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_cache_owned_by_another_user_is_not_used(cache, source, tmp_path):
    _load(source)
    marker = tmp_path / "constructor-ran"
    _plant(cache, tmp_path, marker)
    os.chown(cache, 65534, 65534)
    with pytest.warns(native.NativeCacheWarning, match=r"owned by uid 65534, not by this user"):
        assert _load(source).softclass_test_answer() == 42
    assert not marker.exists()


def test_a_library_that_does_not_match_its_recorded_hash_is_not_loaded(cache, source, tmp_path):
    _load(source)
    library, _ = _cached(cache)
    marker = tmp_path / "constructor-ran"
    planted = _compile(tmp_path, PLANTED_SOURCE, tmp_path / "planted.so", marker)
    library.write_bytes(planted.read_bytes())  # the old name and record, other content
    with pytest.warns(native.NativeCacheWarning, match="does not match the hash recorded"):
        assert _load(source).softclass_test_answer() == 42
    assert not marker.exists()


def test_a_library_without_hash_record_is_never_loaded(cache, source, tmp_path):
    """The name the cache used before records existed: a file there is ignored, not loaded."""
    marker = tmp_path / "constructor-ran"
    cache.mkdir(parents=True, mode=0o700)
    for name in ("answer.so", "answer-0123456789abcdef.so"):
        _compile(tmp_path, PLANTED_SOURCE, cache / name, marker)
    assert _load(source).softclass_test_answer() == 42
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 100, 0.5])
def test_a_truncated_library_is_rebuilt_not_a_crash(cache, source, keep):
    _load(source)
    library, _ = _cached(cache)
    content = library.read_bytes()
    size = int(len(content) * keep) if isinstance(keep, float) else keep
    library.write_bytes(content[:size])
    with pytest.warns(native.NativeCacheWarning, match="does not match the hash recorded"):
        assert _load(source).softclass_test_answer() == 42
    assert library.read_bytes() == content


def test_a_damaged_hash_record_is_rebuilt(cache, source):
    _load(source)
    _, record = _cached(cache)
    record.write_text("not a digest")
    with pytest.warns(native.NativeCacheWarning, match="its hash record is damaged"):
        assert _load(source).softclass_test_answer() == 42


def test_a_library_without_the_symbols_is_rebuilt(cache, source, tmp_path):
    """A library that passes every check but lacks the functions (say, a record pointing at
    another build of ours) is replaced by a fresh build."""
    _load(source)
    _, record = _cached(cache)
    other = _compile(tmp_path, "int unrelated(void) { return 1; }\n", tmp_path / "other.so")
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    (cache / f"{record.stem}-{digest[:16]}.so").write_bytes(other.read_bytes())
    record.write_text(digest + "\n")
    with pytest.warns(native.NativeCacheWarning, match=r"missing the symbols"):
        assert _load(source).softclass_test_answer() == 42


def test_a_symlinked_library_is_not_followed(cache, source, tmp_path):
    _load(source)
    library, _ = _cached(cache)
    marker = tmp_path / "constructor-ran"
    planted = _compile(tmp_path, PLANTED_SOURCE, tmp_path / "planted.so", marker)
    library.unlink()
    library.symlink_to(planted)
    with pytest.warns(native.NativeCacheWarning, match="the library is not readable"):
        assert _load(source).softclass_test_answer() == 42
    assert not marker.exists()


def test_a_build_failure_is_reported_not_raised(cache, tmp_path):
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    failures = []
    assert native.load_compiled(broken, FLAGS, (), failures, SYMBOLS) is None
    assert failures[-1].startswith("building broken.c failed")


def test_the_command_line_shows_a_cache_warning_as_one_line(capsys, monkeypatch):
    from softclass import cli

    monkeypatch.setattr(warnings, "showwarning", cli._show_warning)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        message = "cache \x1b[2Jdirectory is writable by others"
        warnings.warn(message, native.NativeCacheWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == "warning: cache directory is writable by others\n"


@pytest.mark.slow
def test_softclass_train_never_runs_a_planted_library(tmp_path):
    """The issue's attack end to end: ``softclass train --design A`` under umask 000, then the
    cache made other-writable and its library and record replaced by a planted pair."""
    from softclass.data import bundled_path

    cache = tmp_path / "cache"
    environment = {**os.environ, "SOFTCLASS_CACHE_DIR": str(cache)}
    environment.pop("SOFTCLASS_NATIVE", None)
    command = [
        sys.executable, "-m", "softclass", "train", str(bundled_path("iris")),
        "--epochs", "1", "--design", "A", "--out",
    ]  # fmt: skip

    def train(out):
        return subprocess.run(
            [*command, str(tmp_path / out)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
            preexec_fn=lambda: os.umask(0),
        )

    first = train("first")
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    # softclass train builds the compiled code it runs: the MLP training loops (mlp_native) and,
    # where its math calls the fused cross entropy (the first-batch pairing check, the report),
    # the CE kernels (cpu_native). Every record and library is planted over.
    records = list(cache.glob("*_native-*.sha256"))
    libraries = list(cache.glob("*_native-*.so"))
    assert records and len(libraries) == len(records)
    modes = [stat.S_IMODE(path.stat().st_mode) for path in [*records, *libraries]]
    assert modes == [0o600] * (2 * len(records))

    marker = tmp_path / "constructor-ran"
    planted = _compile(tmp_path, PLANTED_SOURCE, tmp_path / "planted.so", marker).read_bytes()
    digest = hashlib.sha256(planted).hexdigest()
    for library in libraries:
        library.write_bytes(planted)  # the old names, too
    for record in records:
        (cache / f"{record.stem}-{digest[:16]}.so").write_bytes(planted)
        record.write_text(digest + "\n")
    os.chmod(cache, 0o777)

    second = train("second")
    assert second.returncode == 0, second.stderr
    assert not marker.exists()
    warning_lines = [line for line in second.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning_lines) == 1 and "is writable by others (mode 0777)" in warning_lines[0]


def test_a_changed_shared_header_rebuilds_the_library_that_includes_it(cache, tmp_path):
    # The loss row math (kernels/loss_rows.h) is compiled into two libraries from one header: the
    # header's content is part of each library's cache key, so an edit there rebuilds both.
    headers = tmp_path / "include"
    headers.mkdir()
    header = headers / "answer_value.h"
    header.write_text("#define ANSWER 42\n")
    source = tmp_path / "answer_with_header.c"
    source.write_text(
        '#include "answer_value.h"\nint softclass_test_answer(void) { return ANSWER; }\n'
    )

    def load():
        failures = []
        loaded = native.load_compiled(source, FLAGS, (), failures, SYMBOLS, headers=(header,))
        assert loaded is not None, failures
        return loaded

    assert load().softclass_test_answer() == 42
    header.write_text("#define ANSWER 43\n")
    assert load().softclass_test_answer() == 43
    assert len(list(cache.glob("answer_with_header-*.sha256"))) == 2


def test_both_libraries_are_built_from_one_source_of_the_loss_math(monkeypatch):
    from softclass.training import mlp_native

    built = {}

    def record(source, flags, libraries, failures, symbols, *, headers=()):
        built[source.name] = tuple(headers)
        return None

    monkeypatch.setattr(native, "load_compiled", record)
    monkeypatch.setattr(mlp_native, "load_compiled", record)
    for module in (native, mlp_native):
        module.library.cache_clear()
        try:
            assert module.library() is None
        finally:
            module.library.cache_clear()
    # the MLP loops include the CE kernels' source, which includes the shared row functions
    assert native._SOURCE.read_text().count('#include "loss_rows.h"') == 1
    assert mlp_native._SOURCE.read_text().count('#include "cpu_native.c"') == 1
    assert built == {
        "cpu_native.c": (native.LOSS_ROWS_HEADER,),
        "mlp_native.c": (native.CE_SOURCE, native.LOSS_ROWS_HEADER),
    }
