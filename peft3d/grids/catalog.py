"""Where grids are found, and each grid file read once per command.

A grid name resolves against three kinds of folders: the built-in ``grids/files/``, the folders installed plugins
declare (entry-point group ``peft3d.grids``, :mod:`peft3d.core.plugins`) and the folders a command names with
``--include PATH`` (as lm-evaluation-harness's ``--include_path``). A name defined in two folders is one error
naming both, never a silent override. Files whose name starts with ``_`` are presets: includable by name, not
listed. Torch-free.
"""
from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from peft3d.core import plugins
from peft3d.core.errors import ConfigError

GRID_DIR = Path(__file__).parent / "files"
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class GridSource:
    path: Path
    origin: str  # "peft3d (built-in)", "--include <folder>" or the plugin's distribution and entry point


class GridCatalog:
    """The grids one command can name; built once per command and passed down (the CLI's ``--include``)."""

    def __init__(self, include: Sequence[str | Path] = ()) -> None:
        self.include = tuple(Path(p).expanduser() for p in include)
        for folder in self.include:
            if not folder.is_dir():
                raise ConfigError(f"--include {folder}: not a folder; pass a folder of grid .yaml files")
        self._files: dict[str, GridSource] | None = None
        self._parsed: dict[Path, dict[str, Any]] = {}

    def files(self) -> dict[str, GridSource]:
        """``{name: source}`` of every grid and preset file; a name found twice raises one line naming both."""
        if self._files is None:
            folders = [(GRID_DIR, plugins.BUILT_IN)]
            folders += [(plugins.grid_folder(p), p.origin) for p in plugins.entry_points("grid")]
            folders += [(f, f"--include {f}") for f in self.include]
            found: dict[str, GridSource] = {}
            for folder, origin in folders:
                for path in sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file()):
                    if path.stem in found and found[path.stem].path.resolve() != path.resolve():
                        first = found[path.stem]
                        raise plugins.PluginError(
                            f"grid '{path.stem}' is defined twice: by {first.origin} ({first.path}) and by "
                            f"{origin} ({path}); rename one of them")
                    found.setdefault(path.stem, GridSource(path, origin))
            self._files = found
        return self._files

    def names(self) -> list[str]:
        """The grids a user can run (presets, ``_*``, excluded)."""
        return sorted(n for n in self.files() if not n.startswith("_"))

    def origin(self, name: str) -> str:
        return self.files()[name].origin

    def path(self, name: str) -> Path:
        """A grid name (or a path to a ``.yaml`` file) -> its file."""
        p = Path(name)
        if p.suffix in SUFFIXES and p.is_file():
            return p
        if name in self.files():
            return self.files()[name].path
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown grid '{name}'{hint} (known: {', '.join(names)}; or pass a path to a .yaml "
                          "file, or --include a folder of grid files)")

    def read(self, path: Path) -> dict[str, Any]:
        """The YAML mapping of ``path``, parsed once per catalog (a fresh copy each call: callers merge it)."""
        key = path.resolve()
        if key not in self._parsed:
            self._parsed[key] = read_yaml(path)
        return copy.deepcopy(self._parsed[key])


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise ConfigError(f"grid {path}: line {line} is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r}); "
                          "fix: save the file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"grid {path}: cannot be read ({e.strerror}); check the path and its permissions") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"grid {path}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"grid {path}: must be a YAML mapping, got {type(data).__name__}")
    return data
