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


def get_entry(registry: dict[str, Entry], kind: str, name: str) -> Entry:
    """The entry called ``name``; ConfigError listing the accepted names otherwise."""
    if name not in registry:
        raise ConfigError(f"unknown {kind} {name!r}: expected one of {', '.join(registry)}")
    return registry[name]


def native_entries(registry: dict[str, Entry]) -> dict[int, Entry]:
    """The entries the compiled branches were written from, as their module defines them
    (``native_code`` → entry). An entry changed or replaced at run time keeps its native_code but
    is no longer what that branch computes: the compiled backend refuses it (the torch backend
    trains it from the registry). Editing an entry is caught by the parity tests of every
    backend."""
    return {
        entry.native_code: entry
        for entry in registry.values()
        if getattr(entry, "native_code", None) is not None
    }
