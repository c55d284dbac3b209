"""The ``softclass`` command line: argument parsing and printing only.

Every command turns its options into calls of the library and prints what comes back. Errors of
softclass's own types are printed as one clear line with a non-zero exit code; ``--debug`` shows
the full traceback instead.

Modules: :mod:`~softclass.cli.app` (the typer app, :func:`main`, signals, stdout),
:mod:`~softclass.cli.options` (the options of compare and train, declared once),
:mod:`~softclass.cli.run` (options to a run), :mod:`~softclass.cli.render` (terminal tables),
:mod:`~softclass.cli.progress` and one module per command under ``commands/``.
"""

from softclass.cli.app import _show_warning, app, main, script_main
from softclass.cli.commands.compare import compare
from softclass.cli.commands.diagnose import bench, check, explain
from softclass.cli.commands.predict import predict
from softclass.cli.commands.train import train
from softclass.cli.examples import attach
from softclass.cli.options import _REGISTRY_NAMES, _SPECS, _as_typed, _Typed
from softclass.cli.progress import _ProgressBars
from softclass.cli.run import _is_bundled_iris, _resolve

attach(app)  # each command's --help ends with its examples (cli/examples.py)

__all__ = [
    "_REGISTRY_NAMES",
    "_SPECS",
    "_ProgressBars",
    "_Typed",
    "_as_typed",
    "_is_bundled_iris",
    "_resolve",
    "_show_warning",
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
