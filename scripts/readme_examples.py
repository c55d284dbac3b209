"""Write (or check) the example outputs of README.md by running the commands they show.

Each example is a block of README.md between ``<!-- example: NAME -->`` and
``<!-- /example -->``: a ``text`` fence holding ``$ COMMAND`` and what the command printed. This
script runs each command of :data:`EXAMPLES` in a fresh directory and writes its output there,
so the README shows what the code prints. ``--check`` writes nothing and fails when a block
differs from a new run, apart from the parts that differ from run to run (:data:`VOLATILE`:
seconds, the run's time-stamped directory); ``tests/test_readme_examples.py`` runs it.

Usage: python scripts/readme_examples.py [--check]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
# Block name → the softclass command line it shows (run with a 100-column terminal).
EXAMPLES = {"compare": "softclass compare"}
WIDTH = 100
# What differs between two runs of the same command: pattern → what --check compares instead.
VOLATILE = (
    (re.compile(r"\d+(\.\d+)? s\b"), "N s"),
    (re.compile(r"runs/compare-\d{8}-\d{6}"), "runs/compare-DATE"),
)
BLOCK = re.compile(
    r"(?P<head><!-- example: (?P<name>[\w-]+) -->\n```text\n)(?P<body>.*?)(?P<tail>```\n<!-- "
    r"/example -->)",
    re.DOTALL,
)


def run_example(command: str) -> str:
    """``$ command`` and what it printed (stdout and stderr, in order), run in an empty
    directory with a ``WIDTH``-column terminal; trailing blanks of each line removed."""
    executable = shutil.which("softclass") or shutil.which(
        "softclass", path=str(Path(sys.executable).parent)
    )
    if executable is None:
        raise SystemExit("softclass is not installed in this environment (pip install -e .)")
    environment = {**os.environ, "COLUMNS": str(WIDTH), "NO_COLOR": "1", "TERM": "dumb"}
    with tempfile.TemporaryDirectory(prefix="softclass-readme-") as directory:
        finished = subprocess.run(
            [executable, *command.split()[1:]],
            cwd=directory,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    if finished.returncode != 0:
        raise SystemExit(f"{command!r} failed ({finished.returncode}):\n{finished.stdout}")
    lines = [line.rstrip() for line in finished.stdout.splitlines()]
    return "\n".join([f"$ {command}", *lines]) + "\n"


def masked(text: str) -> str:
    """``text`` with the parts that differ from run to run replaced by placeholders."""
    for pattern, placeholder in VOLATILE:
        text = pattern.sub(placeholder, text)
    return text


def blocks(readme: str) -> dict[str, str]:
    """Each example block of ``readme``: name → its text (inside the fence)."""
    return {match["name"]: match["body"] for match in BLOCK.finditer(readme)}


def differences(readme: str) -> list[str]:
    """What a new run of each example prints that ``readme`` does not show (empty: in step)."""
    shown = blocks(readme)
    problems = [
        f"README block {name!r} is not in EXAMPLES" for name in shown if name not in EXAMPLES
    ]
    for name, command in EXAMPLES.items():
        if name not in shown:
            problems.append(f"README has no block <!-- example: {name} -->")
            continue
        printed = run_example(command)
        if masked(printed) != masked(shown[name]):
            problems.append(
                f"README block {name!r} differs from what {command!r} prints:\n{printed}"
            )
    return problems


def rewritten(readme: str) -> str:
    """``readme`` with every example block replaced by a new run of its command."""

    def fill(match: re.Match[str]) -> str:
        return match["head"] + run_example(EXAMPLES[match["name"]]) + match["tail"]

    return BLOCK.sub(fill, readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a change")
    arguments = parser.parse_args()
    readme = README.read_text(encoding="utf-8")
    if arguments.check:
        problems = differences(readme)
        for problem in problems:
            print(problem, file=sys.stderr)
        raise SystemExit(1 if problems else 0)
    README.write_text(rewritten(readme), encoding="utf-8")


if __name__ == "__main__":
    main()
