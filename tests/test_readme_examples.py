"""README.md's example outputs are what the commands print (scripts/readme_examples.py)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "readme_examples.py"


def _script():
    spec = importlib.util.spec_from_file_location("readme_examples", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_block_of_the_readme_is_produced_by_the_script():
    script = _script()
    readme = script.README.read_text(encoding="utf-8")
    shown = script.blocks(readme)
    assert set(shown) == set(script.EXAMPLES)
    for name, command in script.EXAMPLES.items():
        assert shown[name].startswith(f"$ {command}\n"), name
    # Every `$ softclass` transcript in the README sits in an example block.
    assert readme.count("\n$ softclass") == len(shown)


def test_masking_hides_only_what_differs_between_runs():
    script = _script()
    first = "0.3 s of training (+ 19 s once); written to runs/compare-20261204-031453\nECE 0.028"
    second = (
        "12.5 s of training (+ 0.01 s once); written to runs/compare-20261205-101010\nECE 0.028"
    )
    assert script.masked(first) == script.masked(second)
    assert script.masked(first) != script.masked(first.replace("0.028", "0.040"))


@pytest.mark.slow
def test_readme_examples_match_a_new_run():
    script = _script()
    assert script.differences(script.README.read_text(encoding="utf-8")) == []


def test_every_import_in_the_readmes_python_blocks_works():
    """A reader copies the README's Python blocks: each name they import must exist where the
    block says (an import line of a moved function failed with ImportError)."""
    import ast
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    imports = [
        node
        for block in blocks
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert len(imports) >= 5  # the blocks were found
    for node in imports:
        code = ast.unparse(node)
        exec(compile(code, "README.md", "exec"), {})  # raises ImportError naming what is missing
