"""A small lazy registry: names map to ``"module.path:Attr"`` strings, imported on first use.

Keeping targets as strings means ``bench ls`` and ``bench validate`` never import torch.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Iterator


class RegistryError(KeyError):
    """Unknown or duplicate registry name. ``str()`` is a single readable line."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass
class Registry:
    kind: str  # "backbone", "method", ... used in error messages
    _targets: dict[str, str] = field(default_factory=dict)
    _meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    def register(self, name: str, target: str, **meta: Any) -> None:
        if name in self._targets:
            raise RegistryError(f"{self.kind} '{name}' is already registered (as {self._targets[name]})")
        if ":" not in target:
            raise ValueError(f"registry target must look like 'pkg.module:Attr', got {target!r}")
        self._targets[name] = target
        self._meta[name] = dict(meta)

    def check(self, name: str) -> str:
        """Return ``name`` if registered, else raise with close matches."""
        if name not in self._targets:
            close = difflib.get_close_matches(name, list(self._targets), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._targets))
            raise RegistryError(f"unknown {self.kind} '{name}'{hint} (known: {known})")
        return name

    def get(self, name: str) -> Any:
        """Import and return the registered object."""
        self.check(name)
        if name not in self._cache:
            module, attr = self._targets[name].split(":")
            self._cache[name] = getattr(importlib.import_module(module), attr)
        return self._cache[name]

    def meta(self, name: str) -> dict[str, Any]:
        return dict(self._meta[self.check(name)])

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
