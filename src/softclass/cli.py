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


@app.command()
def check(
    demo: Annotated[
        bool, typer.Option("--demo", help="Make each of the nine classic mistakes and check it.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the findings as JSON.")
    ] = False,
) -> None:
    """Check how model outputs, targets and the loss are paired (today: --demo)."""
    import dataclasses
    import json

    from rich.markup import escape
    from rich.panel import Panel
    from rich.syntax import Syntax
    from rich.table import Table

    from softclass.check_demo import run_demo
    from softclass.errors import ConfigError

    if not demo:
        raise ConfigError(
            "softclass check: pass --demo; checking a saved model on a data table is not "
            "available yet"
        )
    results = run_demo()
    if json_output:
        records = [
            {
                "mistake": mistake.code,
                "title": mistake.title,
                "snippet": mistake.snippet,
                "findings": [dataclasses.asdict(finding) for finding in findings],
            }
            for mistake, findings in results
        ]
        console.print_json(json.dumps(records))
        return
    for number, (mistake, findings) in enumerate(results, start=1):
        body = Table.grid(padding=(0, 1))
        body.add_column(style="bold", no_wrap=True)
        body.add_column()
        body.add_row("code", Syntax(mistake.snippet, "python", word_wrap=True))
        for finding in findings:
            colour = "red" if finding.severity == "error" else "yellow"
            body.add_row("checker", f"[{colour}]{finding.severity}[/] [bold]{finding.code}[/]")
            body.add_row("seen", escape(finding.seen))
            body.add_row("fix", escape(finding.fix))
        if not findings:
            body.add_row("checker", "[red]nothing found[/]")
        console.print(Panel(body, title=f"{number}. {mistake.title}", title_align="left"))
