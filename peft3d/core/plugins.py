"""Plugins: installed distributions that add methods, backbones, datasets and grids without touching peft3d.

A distribution declares entry points in one of four groups (``GROUPS``). For ``peft3d.methods``,
``peft3d.backbones`` and ``peft3d.datasets`` the entry point's *name* is the name a grid uses and its *value*
points at a :class:`Registration`: the same target string and metadata a built-in passes to
:meth:`peft3d.core.registry.Registry.register`. The module holding the registration must not import torch
(``bench ls`` and ``bench validate`` read it; the target itself is imported only when a run needs it), so a
plugin's names validate exactly like the built-ins'. For ``peft3d.grids`` the value points at a package (or a
``str`` / ``Path`` attribute) whose folder holds grid YAML files.

Read with :mod:`importlib.metadata` once per process and ``sys.path`` (a scan of the installed distributions
costs ~20 ms; the entry points are loaded only when their registry is first asked for a name).
"""
from __future__ import annotations

import functools
import importlib
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from peft3d.core.errors import ConfigError

GROUPS = {"method": "peft3d.methods", "backbone": "peft3d.backbones", "dataset": "peft3d.datasets",
          "grid": "peft3d.grids"}
BUILT_IN = "peft3d (built-in)"


class PluginError(ConfigError):
    """A plugin that cannot be used (fails to load, wrong value, clashes with another name); exits 2."""


class Registration:
    """What a plugin's ``peft3d.methods`` / ``peft3d.backbones`` / ``peft3d.datasets`` entry point points at:
    ``target`` (``"package.module:Attr"``, imported only when a run needs it) and the metadata its registry
    requires (``bench ls <kind> --json`` of a built-in shows what each key holds)."""

    def __init__(self, target: str, **meta: Any) -> None:
        self.target = target
        self.meta = meta

    def __repr__(self) -> str:
        return f"Registration({self.target!r}, {', '.join(f'{k}={v!r}' for k, v in self.meta.items())})"


@dataclass(frozen=True)
class Plugin:
    group: str  # the entry-point group, e.g. "peft3d.methods"
    name: str  # the entry point's name
    value: str  # what it points at, "module:attr"
    dist: str  # "<distribution> <version>"

    @property
    def origin(self) -> str:
        return f"distribution {self.dist} (entry point {self.group}: {self.name} = {self.value})"

    def load(self) -> Any:
        """The object the entry point names; any failure to import it is one line naming the distribution."""
        module, _, attr = self.value.partition(":")
        try:
            obj = importlib.import_module(module.strip())
            for part in filter(None, attr.strip().split(".")):
                obj = getattr(obj, part)
        except Exception as e:  # noqa: BLE001 -- whatever the plugin raised: one line, then exit 2
            msg = " ".join(str(e).split())[:200]
            raise PluginError(f"plugin {self.origin} failed to load ({type(e).__name__}: {msg}); fix the "
                              "distribution or uninstall it") from None
        return obj


def entry_points(kind: str) -> list[Plugin]:
    """The installed entry points of ``GROUPS[kind]``, sorted by distribution then name."""
    return list(_scan(tuple(sys.path)).get(GROUPS[kind], ()))


@functools.lru_cache(maxsize=4)
def _scan(path: tuple[str, ...]) -> dict[str, tuple[Plugin, ...]]:
    """Every peft3d entry point on ``path`` (== ``sys.path``). ``importlib.metadata.entry_points`` keeps the
    first copy of a distribution found twice and reads no METADATA file except those of the plugins found."""
    out: dict[str, list[Plugin]] = {}
    every = metadata.entry_points()  # one scan of the installed distributions for the four groups
    for group in GROUPS.values():
        for ep in every.select(group=group):
            dist = f"{ep.dist.metadata['Name']} {ep.dist.version}" if ep.dist is not None else "?"
            out.setdefault(group, []).append(Plugin(group, ep.name, ep.value, dist))
    return {g: tuple(sorted(ps, key=lambda p: (p.dist, p.name))) for g, ps in out.items()}


def registration(plugin: Plugin, kind: str) -> Registration:
    obj = plugin.load()
    if not isinstance(obj, Registration):
        raise PluginError(f"plugin {plugin.origin}: a {GROUPS[kind]} entry point must point at a "
                          f"peft3d.core.plugins.Registration, got {type(obj).__name__}; see docs/extending.md")
    return obj


def grid_folder(plugin: Plugin) -> Path:
    """The folder of grid files a ``peft3d.grids`` entry point names (a package, or a str/Path attribute)."""
    obj = plugin.load()
    if isinstance(obj, ModuleType) and getattr(obj, "__file__", None):
        folder = Path(obj.__file__).parent
    elif isinstance(obj, ModuleType) and list(getattr(obj, "__path__", [])):  # a namespace package
        folder = Path(list(obj.__path__)[0])
    elif isinstance(obj, (str, Path)):
        folder = Path(obj)
    else:
        raise PluginError(f"plugin {plugin.origin}: a peft3d.grids entry point must point at a package or a "
                          f"folder path, got {type(obj).__name__}; see docs/extending.md")
    if not folder.is_dir():
        raise PluginError(f"plugin {plugin.origin}: grid folder {folder} does not exist; fix the distribution")
    return folder
