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
from rich.markup import escape

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
        app()
    except (SoftclassError, ValueError, RuntimeError, IndexError, OSError) as error:
        if _state["debug"]:
            raise
        err_console.print("[bold red]error:[/]", escape(str(error)), highlight=False)
        sys.exit(2)


def _parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated numbers like 2.5,3.5,1.5, got {text!r}", param_hint=option
        ) from None


@app.command()
def explain(
    logits: Annotated[
        str | None,
        typer.Option(help="Explain this logit vector instead, e.g. 2.5,3.5,1.5."),
    ] = None,
    target: Annotated[int, typer.Option(help="True class of --logits (0-based).")] = 0,
) -> None:
    """Print the worked numbers step by step: exact values beside the published ones."""
    from rich.table import Table

    from softclass import explain as worked

    if logits is None:
        examples = worked.worked_examples()
    else:
        examples = [worked.explain_vector(_parse_floats(logits, "--logits"), target)]
    for example in examples:
        table = Table(title=example.title, title_justify="left", show_lines=False)
        table.add_column("step")
        table.add_column("exact (float64)", justify="right")
        table.add_column("published", justify="right")
        table.add_column("note")
        for step in example.steps:
            exact = ", ".join(f"{value:.4f}" for value in step.exact)
            published = "" if step.published is None else ", ".join(step.published)
            if step.differs:
                published = f"[yellow]{published} ≠[/]"
            table.add_row(step.label, exact, published, step.note)
        console.print(table)
        if example.remark:
            console.print(f"  {example.remark}\n", highlight=False)


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
