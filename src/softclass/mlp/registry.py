"""The one rule every registry of :mod:`softclass.mlp` adds an entry by (designs, activations,
optimizers): a name is taken once; each entry checks its own facts when it is made."""

from __future__ import annotations

from typing import Protocol, TypeVar

from softclass.errors import ConfigError


class _Named(Protocol):
    name: str


Entry = TypeVar("Entry", bound=_Named)


def add_entry(registry: dict[str, Entry], kind: str, entry: Entry) -> Entry:
    """Add ``entry`` to ``registry`` under its name and return it.

    Raises:
        ConfigError: the name is already registered (``kind`` names the registry, e.g.
            "activation").
    """
    if entry.name in registry:
        raise ConfigError(f"{kind} {entry.name!r} is already registered")
    registry[entry.name] = entry
    return entry
