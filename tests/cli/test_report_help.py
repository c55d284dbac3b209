"""Docs that stay true: every command's --help ends with examples that parse, and JSON output
is asked for with the same flag on every command that has it."""

import json
import shlex

import pytest
import typer.main

from softclass import cli
from softclass.cli.examples import EXAMPLES
from softclass.data import bundled_path

COMMANDS = typer.main.get_command(cli.app).commands


def test_every_command_has_examples():
    assert set(EXAMPLES) == set(COMMANDS)
    for name, examples in EXAMPLES.items():
        assert 2 <= len(examples) <= 3, name


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_help_ends_with_the_examples(run, name):
    code, out, _ = run(name, "--help")
    assert code == 0
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    expected = [text for example in EXAMPLES[name] for text in example]
    assert lines[-len(expected) - 1 :] == ["Examples:", *expected]


@pytest.mark.parametrize(
    ("name", "line"), [(name, line) for name, rows in EXAMPLES.items() for line, _ in rows]
)
def test_each_example_parses_with_the_commands_own_options(name, line):
    words = shlex.split(line)
    assert words[:2] == ["softclass", name]
    command = COMMANDS[name]
    context = command.make_context(name, words[2:])  # an unknown flag raises here
    assert context.info_name == name and context.params


def test_predict_json_flag_is_the_format_json_alias(run, tmp_path):
    people = bundled_path("people")
    model_dir = tmp_path / "model"
    code, _, err = run("train", people, "--design", "A", "--epochs", "2", "--out", model_dir)
    assert code == 0, err
    rows = tmp_path / "rows.csv"
    rows.write_text('age,income,weight\n23,"$72,000",155\n61,"$41,000",240\n')
    code, flag, err = run("predict", model_dir, rows, "--json")
    assert code == 0, err
    code, alias, err = run("predict", model_dir, rows, "--format", "json")
    assert code == 0, err
    assert flag == alias and [record["row"] for record in json.loads(flag)] == [2, 3]
    code, _, err = run("predict", model_dir, rows, "--json", "--format", "csv")
    assert code == 2
    assert "--json and --format csv ask for different outputs" in err
    code, _, err = run("predict", model_dir, rows, "--format", "xml")
    assert code == 2 and "--format 'xml': expected one of csv, json, jsonl" in err
