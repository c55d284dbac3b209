"""``explain``, ``check`` and ``bench``: the worked numbers, the pairing checker, the benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from softclass.cli.app import _Command, app, console, err_console
from softclass.cli.render import _findings_table

_MAX_FLOATS = 1000  # explain prints every value a few times: a screenful, not a file


def _parse_floats(text: str, option: str) -> tuple[float, ...]:
    if text.count(",") >= _MAX_FLOATS:
        raise typer.BadParameter(
            f"{text.count(',') + 1:,} values: at most {_MAX_FLOATS:,} are explained",
            param_hint=option,
        )
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated numbers like 2.5,3.5,1.5, got {text!r}", param_hint=option
        ) from None


@app.command(cls=_Command)
def explain(
    logits: Annotated[
        str | None,
        typer.Option(help="Explain this logit vector instead, e.g. 2.5,3.5,1.5."),
    ] = None,
    target: Annotated[int, typer.Option(help="True class of --logits (0-based).")] = 0,
) -> None:
    """Print the worked numbers step by step: exact values beside the published ones."""
    from rich.table import Table

    from softclass.diagnostics import explain as worked

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


@app.command(cls=_Command)
def check(
    model_dir: Annotated[
        Path | None, typer.Argument(help="Model directory written by train/compare.")
    ] = None,
    data: Annotated[Path | None, typer.Argument(help="CSV or Parquet table with targets.")] = None,
    rows: Annotated[int, typer.Option("--rows", help="Rows of DATA to check.", min=1)] = 256,
    demo: Annotated[
        bool, typer.Option("--demo", help="Make each of the nine classic mistakes and check it.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the findings as JSON.")
    ] = False,
) -> None:
    """Check how outputs, targets and the loss are paired: a saved model on a table, or --demo."""
    import dataclasses
    import json

    from rich.panel import Panel

    from softclass.diagnostics.check_demo import run_demo
    from softclass.errors import ConfigError

    if demo:
        results = [
            (mistake.title, mistake.code, mistake.snippet, found) for mistake, found in run_demo()
        ]
    elif model_dir is not None and data is not None:
        from softclass.data import read_table
        from softclass.jobs.predict import check_saved_model
        from softclass.jobs.store import load_model

        saved = load_model(model_dir)
        findings = check_saved_model(saved, read_table(data, raw=True), rows)
        snippet = (
            f"outputs = design_{saved.design.name}.output(model(first {rows} rows))\n"
            f"loss = {saved.design.loss_name}(outputs, targets)"
        )
        results = [
            (
                f"model {model_dir} (design {saved.design.name}: {saved.design.title}) on {data}",
                "saved-model",
                snippet,
                findings,
            )
        ]
    else:
        raise ConfigError(
            "softclass check needs MODEL_DIR and DATA (a saved model and a table with its "
            "target column), or --demo"
        )
    if json_output:
        records = [
            {
                "title": title,
                "mistake": code,
                "snippet": snippet,
                "findings": [dataclasses.asdict(finding) for finding in found],
            }
            for title, code, snippet, found in results
        ]
        console.print_json(json.dumps(records))
        return
    for number, (title, _code, snippet, found) in enumerate(results, start=1):
        empty = "[red]nothing found[/]" if demo else "[green]no pairing problem found[/]"
        body = _findings_table(snippet, found, empty)
        console.print(Panel(body, title=f"{number}. {title}", title_align="left"))


@app.command(cls=_Command)
def bench(
    repeats: Annotated[int, typer.Option(help="Timed runs per implementation and case.")] = 5,
    memory: Annotated[
        bool, typer.Option(help="Also measure peak extra memory (one subprocess per case).")
    ] = True,
) -> None:
    """Benchmark softclass's cross entropy against torch's: time and peak extra memory."""
    from softclass.jobs import bench as benchmarks

    results = benchmarks.run_benchmarks(
        repeats=repeats,
        measure_memory=memory,
        on_result=lambda result: err_console.print(f"done: {result.case.name}"),
    )
    console.print(benchmarks.format_markdown(results), highlight=False)
    console.print(benchmarks.machine_description(), highlight=False)
