"""The ``softclass`` application: the typer app, the entry point :func:`main` (errors as one
line, exit codes, signals) and the plumbing of standard output."""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from typer._click.exceptions import ClickException as _ClickException
from typer._click.exceptions import NoArgsIsHelpError as _NoArgsIsHelpError

from softclass.cli.options import _as_typed, _with_registry_names
from softclass.errors import (
    STOP_REQUESTS,
    Interrupted,
    SoftclassError,
    SoftclassWarning,
)


def _flags_without_placeholder(params: list) -> list:
    """Flags (``--json``, ``--help``) take no value: show no type placeholder for them."""
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    return params


class _Command(typer.core.TyperCommand):
    """A command whose help shows flags without a type placeholder and lists the names of the
    registries (activations, optimizers ...) where an option's help asks for them."""

    def get_params(self, ctx):
        return _with_registry_names(_flags_without_placeholder(super().get_params(ctx)))


class _Group(typer.core.TyperGroup):
    """The root group, with the same flag display as :class:`_Command`."""

    def get_params(self, ctx):
        return _flags_without_placeholder(super().get_params(ctx))


app = typer.Typer(
    name="softclass",
    help="Multi-class classification with PyTorch: four output/loss designs, compared.",
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _DataSafeConsole(Console):
    """A rich console that prints every string through
    :func:`softclass.jobs.output.terminal_text`: class names, column names and values from the
    user's files cannot send escape sequences to the terminal (rich adds its own styles after)."""

    def render_str(self, text: str, **options: Any) -> Text:
        from softclass.jobs.output import terminal_text

        return super().render_str(terminal_text(text), **options)

    def line(self, *objects: Any) -> None:
        """Print a message as written: no highlighting of its numbers, no hard line breaks."""
        self.print(*objects, highlight=False, soft_wrap=True)


console = _DataSafeConsole()
err_console = _DataSafeConsole(stderr=True)

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        from softclass.version import __version__

        console.print(f"softclass {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    """softclass's own warnings as one ``warning:`` line; others as Python shows them."""
    if issubclass(category, SoftclassWarning):
        err_console.line("[yellow]warning:[/]", escape(str(message)))
    else:
        _python_show_warning(message, category, *args, **kwargs)


_python_show_warning = warnings.showwarning


def main() -> None:
    """Entry point of the console script: run the app, turning known errors into one line.

    Exit codes: 0 success; 2 an error or a bad option value (one line on stderr); 128 + the
    signal number when SIGINT (130) or SIGTERM (143) stopped the command, after one line saying
    what was kept; 141 (128 + SIGPIPE, what a shell reports for a writer killed by SIGPIPE)
    without a message when the reader of stdout went away (``softclass predict ... | head``);
    2 with one line when stdout is closed or its device full (the output is incomplete).
    """
    from softclass.cli.streams import StdoutFailed, install_checked_stdout
    from softclass.evaluation.figure_pool import figure_pool

    install_checked_stdout()
    warnings.showwarning = _show_warning
    code = 0
    with _signals_interrupt():
        try:
            try:
                with figure_pool(enabled=_draws_figures(sys.argv[1:])):
                    code = app(standalone_mode=False) or 0
            finally:
                _flush_stdout()
        except StdoutFailed as failure:
            _stdout_failed(failure.error)
        except Interrupted as interrupt:
            name = signal.Signals(interrupt.signal_number).name
            _error_line(f"interrupted by {name}: {escape(interrupt.kept or 'nothing was written')}")
            sys.exit(128 + interrupt.signal_number)
        except _ClickException as error:
            _usage_failed(error)
        except typer.Abort:
            sys.exit(130)
        except (SoftclassError, ValueError, RuntimeError, IndexError, OSError) as error:
            if _state["debug"]:
                raise
            _error_line("[bold red]error:[/] " + escape(_as_typed(error)))
            sys.exit(2)
        except MemoryError as error:
            if _state["debug"]:
                raise
            _error_line("[bold red]error:[/] " + escape(f"out of memory: {error}"))
            sys.exit(2)
    if code:
        sys.exit(code)


def script_main() -> NoReturn:
    """The console script (``softclass``, ``python -m softclass``): :func:`main`, then the
    process ends without tearing the interpreter down.

    When :func:`main` returns or exits, the command's files are complete (written atomically,
    synced) and standard output is flushed; a normal exit would then run the exit handlers (run
    here too) and destroy every module, which costs torch alone about 0.45 s (``python -c
    "import torch"``: 1.36-1.47 s with it, 0.97-1.00 s without, measured 2026-12-04). A message
    as exit code or a thread still running take the normal exit."""
    try:
        main()
        code: object = 0
    except SystemExit as stop:
        code = 0 if stop.code is None else stop.code
    others = [thread for thread in threading.enumerate() if thread is not threading.main_thread()]
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython's; absent: normal exit
    if (
        not isinstance(code, int)
        or any(not thread.daemon for thread in others)
        or run_exit_handlers is None
    ):
        sys.exit(code)
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # main already reported a failed stdout
            stream.flush()
    os._exit(code)


def _error_line(markup: str) -> None:
    err_console.line(markup)


def _usage_failed(error: _ClickException) -> NoReturn:
    """A bad command line or option value as one line (not click's boxed usage text)."""
    if isinstance(error, _NoArgsIsHelpError):
        error.show()
        sys.exit(error.exit_code)
    context = getattr(error, "ctx", None)
    hint = f" (see {context.command_path} --help)" if context is not None else ""
    _error_line("[bold red]error:[/] " + escape(error.format_message() + hint))
    sys.exit(error.exit_code)


_EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """While the command runs, SIGINT and SIGTERM raise :class:`Interrupted` (once: a second
    signal during the clean-up is ignored), so that temporary files and locks are released."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived = STOP_REQUESTS  # also read where an Interrupted lost on the way must still stop
    arrived.clear()

    def handler(signal_number: int, _frame: object) -> None:
        if arrived:
            return
        arrived.append(signal_number)
        raise Interrupted(signal_number)

    previous = {number: signal.signal(number, handler) for number in _INTERRUPTS}
    try:
        yield
    finally:
        for number, action in previous.items():
            signal.signal(number, action)
        arrived.clear()


_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stdout_checked() -> Iterator[None]:
    """A failure to write standard output inside the block ends the command: code 141, quietly,
    when the reader closed the pipe (``| head``); code 2 after one line for any other failure
    (``> file`` on a full disk, ``>&-``)."""
    from softclass.cli.streams import StdoutFailed

    try:
        yield
    except StdoutFailed as failure:
        _stdout_failed(failure.error)
    except OSError as error:
        _stdout_failed(error)


def _write_stdout(text: str) -> None:
    """Write ``text`` to stdout and flush, so that a failed write is seen here, not lost at exit
    (:func:`_stdout_checked`)."""
    with _stdout_checked():
        sys.stdout.write(text)
        sys.stdout.flush()


def _write_stdout_bytes(data: bytes) -> None:
    """:func:`_write_stdout` for encoded text (a chunk of predictions): straight to the buffer
    under ``sys.stdout``."""
    with _stdout_checked():
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def _flush_stdout() -> None:
    with _stdout_checked():
        try:
            sys.stdout.flush()
        except ValueError as error:  # flushing a closed file
            raise OSError(errno.EBADF, str(error)) from None


def _stdout_failed(error: OSError) -> NoReturn:
    _silence_stdout()
    if isinstance(error, BrokenPipeError) or error.errno == errno.EPIPE:
        sys.exit(_EXIT_BROKEN_PIPE)
    problem = (
        "no space left on the device behind standard output"
        if error.errno == errno.ENOSPC
        else f"writing to standard output failed ({error.strerror or error})"
    )
    _error_line("[bold red]error:[/] " + escape(f"{problem}: the output is incomplete"))
    sys.exit(2)


def _silence_stdout() -> None:
    """Point stdout's descriptor at /dev/null: what is still buffered is dropped at exit
    instead of failing again (a second error message, or exit code 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _draws_figures(arguments: list[str]) -> bool:
    """Whether this command line runs a command that writes a report (``compare``, ``train``):
    its figure helpers (:mod:`softclass.evaluation.figure_pool`) are forked before anything
    imports torch — reading the options already does (the registries) — so that they import
    matplotlib and load its fonts while the command imports torch and trains. Not for --help,
    and not under torchrun, where only rank 0 draws."""
    command = next((argument for argument in arguments if not argument.startswith("-")), None)
    return (
        command in ("compare", "train")
        and not {"--help", "-h"} & set(arguments)
        and int(os.environ.get("WORLD_SIZE", "1")) <= 1
    )
