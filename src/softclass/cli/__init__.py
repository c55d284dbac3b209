"""The ``softclass`` command line: argument parsing and printing only.

Every command turns its options into calls of the library and prints what comes back. Errors of
softclass's own types are printed as one clear line with a non-zero exit code; ``--debug`` shows
the full traceback instead.

Modules: :mod:`~softclass.cli.app` (the typer app, :func:`main`, signals, stdout),
:mod:`~softclass.cli.options` (the options of compare and train, declared once),
:mod:`~softclass.cli.run` (options to a run), :mod:`~softclass.cli.render` (terminal tables),
:mod:`~softclass.cli.progress` and one module per command under ``commands/``.
"""

from softclass.cli.app import app, main, script_main
from softclass.cli.commands.compare import compare
from softclass.cli.commands.diagnose import bench, check, explain
from softclass.cli.commands.predict import predict
from softclass.cli.commands.train import train
from softclass.cli.examples import attach

attach(app)  # each command's --help ends with its examples (cli/examples.py)

__all__ = [
    "app",
    "bench",
    "check",
    "compare",
    "explain",
    "main",
    "predict",
    "script_main",
    "train",
]
