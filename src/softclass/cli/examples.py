"""The examples that end each command's ``--help``: two or three lines a new user can run.

One table: :func:`attach` sets each registered command's epilog from it (the command modules
stay as they are), and a test parses each example with the command's own options (so an example
cannot name a flag that no longer exists).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

# Command → (command line, what it does), in the order shown.
EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "compare": (
        (
            "softclass compare",
            "designs A-D on the bundled Iris; open runs/compare-DATE-TIME/report.html",
        ),
        (
            "softclass compare glass.csv --target Type --seeds 5 --out runs/glass",
            "your table, 5 seeds; runs/glass/report.html, report.json, models, plots",
        ),
        ("softclass compare people.csv --design AB --json", "two designs, JSON on stdout"),
    ),
    "train": (
        ("softclass train people.csv --design A --out model/", "train design A, save it"),
        (
            "softclass train people.csv --design A --out model/ --epochs 200 --resume",
            "continue from its checkpoint",
        ),
    ),
    "predict": (
        (
            "softclass predict model/ new_rows.csv --output predictions.csv",
            "one CSV row per input row",
        ),
        ("softclass predict model/ new_rows.csv --json", "the same as JSON on stdout"),
        (
            "softclass predict model/ people.csv --accuracy",
            "also the accuracy on the target column",
        ),
    ),
    "explain": (
        ("softclass explain", "the worked examples, exact beside published"),
        ("softclass explain --logits 2.5,3.5,1.5 --target 1", "your own logits, step by step"),
    ),
    "check": (
        ("softclass check --demo", "the nine classic pairing mistakes, caught"),
        ("softclass check model/ people.csv --json", "a saved model on its table, as JSON"),
    ),
    "bench": (
        ("softclass bench", "softclass's cross entropy against torch's"),
        ("softclass bench --repeats 10 --no-memory", "more repeats, time only"),
    ),
}


def epilog(command: str) -> str:
    """The end of ``command``'s help: "Examples:", then each command line with what it does
    indented below it (lines of at most 78 characters: an 80-column terminal)."""
    lines = ["Examples:"]
    for line, what in EXAMPLES[command]:
        lines += [f"  {line}", f"      {what}"]
    return "\n".join(lines)


def attach(app: typer.Typer) -> None:
    """Give every command registered on ``app`` its examples as the end of its help."""
    for command in app.registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        command.epilog = epilog(name)
