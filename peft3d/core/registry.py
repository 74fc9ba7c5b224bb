"""A small lazy registry: names map to ``"module.path:Attr"`` strings, imported on first use.

Keeping targets as strings means ``bench ls`` and ``bench validate`` never import torch. A registry with an
entry-point ``group`` also holds the names installed plugins register (:mod:`peft3d.core.plugins`), read the
first time it is asked for a name, after the built-ins; a name registered twice is one error naming both origins.
"""
from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from peft3d.core import plugins

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # names end up in run labels, file names and ``family/variant``


class RegistryError(KeyError):
    """Unknown or duplicate registry name. ``str()`` is a single readable line."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass
class Registry:
    kind: str  # "backbone", "method", ... used in error messages
    group: str | None = None  # plugins.GROUPS key whose entry points register here ("method", ...)
    required: tuple[str, ...] = ()  # metadata every registration must carry (built-in or plugin)
    _targets: dict[str, str] = field(default_factory=dict)
    _meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    _origin: dict[str, str] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)
    _plugins_read: bool = False

    def register(self, name: str, target: str, _origin: str = plugins.BUILT_IN, **meta: Any) -> None:
        if name in self._targets:
            raise RegistryError(f"{self.kind} '{name}' is registered twice: by {self._origin[name]} and by "
                                f"{_origin}; uninstall one of them or rename the {self.kind} in one")
        if not NAME.match(name):
            raise RegistryError(f"{self.kind} name {name!r} (from {_origin}) must be letters, digits, '_', '.' "
                                "or '-', starting with a letter or digit")
        if not isinstance(target, str) or ":" not in target:
            raise RegistryError(f"{self.kind} '{name}' (from {_origin}): target must look like "
                                f"'pkg.module:Attr', got {target!r}")
        missing = [k for k in self.required if k not in meta]
        if missing:
            raise RegistryError(f"{self.kind} '{name}' (from {_origin}) lacks metadata {missing}; every "
                                f"{self.kind} declares {list(self.required)} (see docs/extending.md)")
        self._targets[name] = target
        self._meta[name] = dict(meta)
        self._origin[name] = _origin

    def add(self, name: str, record: plugins.Registration, _origin: str = plugins.BUILT_IN) -> None:
        """Register ``name`` from a :class:`~peft3d.core.plugins.Registration`: the one path for a plugin's entry
        point and for a built-in that is declared the way a plugin would declare it (its folder could be shipped
        as a plugin unchanged)."""
        if not isinstance(record, plugins.Registration):
            raise RegistryError(f"{self.kind} '{name}' (from {_origin}): expected a peft3d.core.plugins.Registration, "
                                f"got {type(record).__name__}; see docs/extending.md")
        self.register(name, record.target, _origin=_origin, **record.meta)

    def _read_plugins(self) -> None:
        """Register the names of installed plugins once, after the built-ins (lazily: ``bench ls`` pays for it
        only when it lists this kind)."""
        if self._plugins_read or self.group is None:
            return
        self._plugins_read = True
        for plugin in plugins.entry_points(self.group):
            self.add(plugin.name, plugins.registration(plugin, self.group), _origin=plugin.origin)

    def origin(self, name: str) -> str:
        """Who registered ``name``: ``peft3d (built-in)`` or the plugin distribution and entry point."""
        return self._origin[self.check(name)]

    def check(self, name: str) -> str:
        """Return ``name`` if registered, else raise with close matches."""
        self._read_plugins()
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
        self._read_plugins()
        return sorted(self._targets)

    def __contains__(self, name: object) -> bool:
        self._read_plugins()
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
