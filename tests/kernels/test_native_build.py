"""The C code is compiled at install (setup.py, issue 21), never at run time: softclass loads the
libraries the install put beside its modules, keeps no compiled code elsewhere, and without them
runs its torch paths with one warning saying what is slower."""

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from softclass import kernels
from softclass.kernels import native
from softclass.training import mlp_native

REPOSITORY = Path(__file__).resolve().parents[2]
ANSWER_SOURCE = "int softclass_test_answer(void) { return 42; }\n"
SYMBOLS = ("softclass_test_answer",)


@pytest.fixture
def fresh_warning(monkeypatch):
    """A process that has not yet said that compiled code is unavailable."""
    monkeypatch.setattr(native, "_warned", [])
    monkeypatch.delenv("SOFTCLASS_NATIVE", raising=False)


@pytest.fixture
def built(tmp_path):
    """A directory holding ``answer.c`` and the library built from it, named as setup.py names
    extensions (with Python's extension suffix)."""
    source = tmp_path / "answer.c"
    source.write_text(ANSWER_SOURCE)
    library = tmp_path / f"_answer{native.importlib.machinery.EXTENSION_SUFFIXES[0]}"
    subprocess.run(["cc", "-fPIC", "-shared", "-o", str(library), str(source)], check=True)
    os.utime(source, (1_000_000_000, 1_000_000_000))  # older than the library
    return tmp_path


def _load(directory, failures, sources=()):
    return native.load_built(directory, "_answer", sources, SYMBOLS, failures)


def test_the_installed_libraries_are_loaded():
    for module, stem in ((native, "_cpu_native"), (mlp_native, "_mlp_native")):
        assert module.library() is not None, module.unavailable_reason()
        path = native.built_path(Path(module.__file__).parent, stem)
        assert path is not None and path.suffix == ".so"
    assert mlp_native.step_library() is not None, mlp_native.step_unavailable_reason()
    assert native.built_path(Path(mlp_native.__file__).parent, "_mlp_step") is not None


def test_a_built_library_is_loaded_as_is(built, fresh_warning):
    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = _load(built, failures, (built / "answer.c",))
    assert loaded.softclass_test_answer() == 42 and failures == []


def test_a_missing_library_warns_once_and_says_why(tmp_path, fresh_warning):
    failures = []
    with pytest.warns(native.NativeUnavailableWarning, match=r"torch paths.*more slowly") as caught:
        assert _load(tmp_path, failures) is None
        assert _load(tmp_path, failures) is None
    assert len(caught) == 1
    assert "not built at install" in failures[-1] and str(tmp_path) in failures[-1]


def test_a_library_older_than_its_source_is_not_loaded(built, fresh_warning):
    source = built / "answer.c"
    os.utime(source)  # edited after the build: the library no longer matches it
    failures = []
    with pytest.warns(native.NativeUnavailableWarning, match="older than answer.c") as caught:
        assert _load(built, failures, (source,)) is None
    assert "python setup.py build_ext --inplace" in str(caught[0].message)


def test_a_library_without_the_symbols_is_not_loaded(built, fresh_warning):
    failures = []
    with pytest.warns(native.NativeUnavailableWarning, match="lacks the functions"):
        loaded = native.load_built(built, "_answer", (), ("softclass_missing",), failures)
    assert loaded is None and "softclass_missing" in failures[-1]


def test_a_damaged_library_is_reported_not_raised(tmp_path, fresh_warning):
    (tmp_path / f"_answer{native.importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"x")
    failures = []
    with pytest.warns(native.NativeUnavailableWarning, match="is not loadable"):
        assert _load(tmp_path, failures) is None


def test_compiled_code_can_be_turned_off_silently(built, monkeypatch):
    monkeypatch.setattr(native, "_warned", [])
    monkeypatch.setenv("SOFTCLASS_NATIVE", "0")
    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _load(built, failures) is None
    assert failures == ["disabled by SOFTCLASS_NATIVE=0"]


def test_the_command_line_shows_the_warning_as_one_line(capsys, monkeypatch):
    from softclass.cli.app import _show_warning

    monkeypatch.setattr(warnings, "showwarning", _show_warning)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        message = "compiled \x1b[2Jcode is unavailable"
        warnings.warn(message, native.NativeUnavailableWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == "warning: compiled code is unavailable\n"


def test_running_softclass_compiles_nothing_and_writes_no_code(tmp_path):
    """Import, both libraries and a short ``softclass compare`` with every C compiler on PATH (and
    $CC) replaced by one that leaves a marker, and a fresh home: no compiler runs, no shared
    library appears anywhere under the home."""
    script = """
import sys
import softclass
from softclass.kernels import native
from softclass.training import mlp_native
from softclass.cli import main
assert native.library() is not None and mlp_native.library() is not None
sys.argv = ["softclass", "compare", "--epochs", "3", "--out", sys.argv[1]]
try:
    main()
except SystemExit as stop:
    assert not stop.code, stop.code
"""
    tools = tmp_path / "bin"
    tools.mkdir()
    marker = tmp_path / "a-compiler-ran"
    for name in ("cc", "gcc", "g++", "c++", "clang", "clang++", "ld"):
        (tools / name).write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\nexit 1\n')
        (tools / name).chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    environment = {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
        "CC": str(tools / "cc"),
    }
    environment.pop("SOFTCLASS_NATIVE", None)
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", script, str(tmp_path / "out")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").is_dir()
    assert not marker.exists(), marker.read_text()
    assert list(home.rglob("*.so*")) == [] and list(home.rglob("*softclass*")) == []


def test_the_install_succeeds_without_a_compiler(tmp_path):
    """setup.py's extensions are optional: with no C compiler the build still succeeds (each
    failure is a warning) and builds no library."""
    environment = {**os.environ, "CC": str(tmp_path / "no-such-compiler")}
    done = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"),
         "--build-temp", str(tmp_path / "temp")],
        cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("failed") >= 3 and "_mlp_native" in done.stderr
    assert "_mlp_step" in done.stderr
    assert list((tmp_path / "lib").rglob("*.so")) == []


def test_the_listed_sources_are_what_each_library_includes():
    """Each library's source list (what makes a checkout's library stale) and setup.py's
    ``depends`` follow the ``#include "..."`` lines of the C files."""

    def included(path):
        return re.findall(r'^#include "([^"]+)"', path.read_text(), re.MULTILINE)

    cpu_source, row_header, spatial_header = native.CE_SOURCES
    assert included(cpu_source) == [row_header.name, spatial_header.name]
    assert included(spatial_header) == []
    mlp_source = mlp_native._SOURCES[0]
    assert set(included(mlp_source)) == {cpu_source.name, mlp_source.name}
    assert [path.name for path in mlp_native._SOURCES] == [
        mlp_source.name, cpu_source.name, row_header.name, spatial_header.name,
    ]  # fmt: skip
    step_source, gemm_source = mlp_native._STEP_SOURCES[:2]
    assert included(step_source) == [
        mlp_source.name, gemm_source.name, step_source.name, step_source.name,
    ]  # fmt: skip
    assert included(gemm_source) == []
    assert mlp_native._STEP_SOURCES[2:] == mlp_native._SOURCES
    setup = (REPOSITORY / "setup.py").read_text()
    assert "depends=depends" in setup and '[f"{KERNELS}/cpu_native.c", *ROW_MATH]' in setup
    assert (
        'STEP_INCLUDES = [f"{TRAINING}/small_gemm.c", f"{TRAINING}/mlp_native.c", '
        'f"{KERNELS}/cpu_native.c"]'
    ) in setup
    assert "[*STEP_INCLUDES, *ROW_MATH]" in setup


def test_native_library_can_be_disabled(monkeypatch):
    monkeypatch.setenv("SOFTCLASS_NATIVE", "0")
    native.library.cache_clear()
    try:
        assert native.library() is None
        assert "SOFTCLASS_NATIVE=0" in native.unavailable_reason()
    finally:
        native.library.cache_clear()


def test_native_library_not_built_falls_back(monkeypatch):
    monkeypatch.setattr(native, "built_path", lambda directory, stem: None)
    monkeypatch.setattr(native, "_warned", [])
    native.library.cache_clear()
    try:
        with pytest.warns(native.NativeUnavailableWarning, match="not built at install"):
            assert native.library() is None
        assert "not built at install" in native.unavailable_reason()
        logits = torch.randn(40, 600, requires_grad=True)
        target = torch.randint(0, 600, (40,))
        torch.testing.assert_close(
            kernels.cross_entropy(logits, target), F.cross_entropy(logits, target)
        )
    finally:
        native.library.cache_clear()
