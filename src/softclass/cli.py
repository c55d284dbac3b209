"""The ``softclass`` command line: argument parsing and printing only.

Every command turns its options into calls of the library and prints what comes back. Errors of
softclass's own types are printed as one clear line with a non-zero exit code; ``--debug`` shows
the full traceback instead.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from softclass import __version__
from softclass.errors import SoftclassError

app = typer.Typer(
    name="softclass",
    help="Multi-class classification with PyTorch: four output/loss designs, compared.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
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


def main() -> None:
    """Entry point of the console script: run the app, turning known errors into one line."""
    try:
        app(standalone_mode=False)
    except typer.Exit as stop:
        sys.exit(stop.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except (SoftclassError, ValueError, RuntimeError, IndexError, FileNotFoundError) as error:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {error}", highlight=False)
        sys.exit(2)
    except Exception as error:
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise
