"""One module per command. Importing a module registers its commands on the app; this order is
the order of ``softclass --help``."""

from softclass.cli.commands import diagnose, compare, train, predict  # noqa: I001

__all__ = ["compare", "diagnose", "predict", "train"]
