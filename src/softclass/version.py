"""The installed package's version (a module of its own so any layer can read it)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("softclass")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+src"
