"""The one validation layer for grids: shapes, types, ranges and finite numbers of every top-level key,
checked before any name is looked up or any run starts. ``bench validate``, ``run``, ``tune`` (and every
command that expands a grid) reach it through :func:`peft3d.grids.loader.expand`.

Typed settings (budget, tokenizer, method configs) are checked field by field against their dataclass
annotations in :func:`peft3d.core.spec.from_mapping`; this module covers the grid's own keys. Each error is
one line naming the key and what to write instead; nothing is ever clipped.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from peft3d.backbones.sources import check_weights, parse_weights, shuffle_seed
from peft3d.core.errors import ConfigError
from peft3d.core.spec import as_number

DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
MAX_POINTS = 1_000_000
MAX_WIDTH = 65_536
SEED_LIMIT = 2**32  # numpy's seed range


def check_device(device: Any, where: str = "grid: device") -> str:
    if not isinstance(device, str) or not DEVICE.match(device):
        raise ConfigError(f"{where} must be cpu, cuda, cuda:N or mps, got {device!r}")
    return device


def check_grid(grid: dict[str, Any], name: str) -> dict[str, Any]:
    """Validated copy of a loaded grid (includes resolved); numeric strings of numeric keys become numbers."""
    where = f"grid {name}"
    _finite_everywhere(grid, where)
    out = dict(grid)
    if "description" in grid and not isinstance(grid["description"], str):
        raise ConfigError(f"{where}: description must be a string")
    for key in ("backbones", "datasets"):
        _names(grid, key, where)
    for w in _names(grid, "weights", where):
        _check_weights(w, where)
    out["methods"] = _methods(grid.get("methods"), where)
    if "seeds" in grid:
        out["seeds"] = [_whole(s, f"{where}: seeds", 0, SEED_LIMIT - 1) for s in _listed(grid["seeds"])]
    if "num_points" in grid:
        out["num_points"] = _whole(grid["num_points"], f"{where}: num_points", 1, MAX_POINTS)
    out["head"] = _head(grid.get("head"), where)
    for key in ("budget", "tokenizer", "method_cfg"):
        if grid.get(key) is not None and not isinstance(grid[key], dict):
            raise ConfigError(f"{where}: {key} must be a mapping (key: value), got {grid[key]!r}")
    for m, cfg in (grid.get("method_cfg") or {}).items():
        if cfg is not None and not isinstance(cfg, dict):
            raise ConfigError(f"{where}: method_cfg.{m} must be a mapping (key: value), got {cfg!r}")
    for key in ("protocol", "data_root"):
        _str_or_per_dataset(grid, key, where)
    if "device" in grid:
        check_device(grid["device"], f"{where}: device")
    return out


def _check_weights(weights: str, where: str) -> None:
    """The spelling of a ``weights`` value, and for ``path:`` that the file or folder is there (a run would fail
    on it after the grid started)."""
    try:
        check_weights(weights)
    except ValueError as e:
        raise ConfigError(f"{where}: weights: {e}") from None
    if shuffle_seed(weights) is None and (kind_path := parse_weights(weights))[0] == "path":
        if not Path(kind_path[1]).exists():
            raise ConfigError(f"{where}: weights {weights}: no such file or folder; fix: point path: at the "
                              "checkpoint file or weights folder (bench ls backbones --json shows what each "
                              "backbone reads)")


def _finite_everywhere(x: Any, where: str) -> None:
    if isinstance(x, float) and not math.isfinite(x):
        raise ConfigError(f"{where} must be a finite number, got {x!r}")
    if isinstance(x, dict):
        for k, v in x.items():
            _finite_everywhere(v, f"{where}: {k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            _finite_everywhere(v, f"{where}[{i}]")


def _listed(v: Any) -> list:
    return v if isinstance(v, list) else [v]


def _names(grid: dict[str, Any], key: str, where: str) -> list[str]:
    values = _listed(grid.get(key, []))
    for v in values:
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{where}: {key} must list names (strings), got {v!r}")
    return values


def _whole(v: Any, where: str, low: int, high: int) -> int:
    x = as_number(v)
    if x is None or not math.isfinite(x) or x != int(x):
        raise ConfigError(f"{where} must be a whole number, got {v!r}")
    if not low <= x <= high:
        raise ConfigError(f"{where}={v!r} is out of range: use a value in [{low}, {high}]")
    return int(x)


def _methods(methods: Any, where: str) -> Any:
    for m in _listed(methods) if methods is not None else []:
        if isinstance(m, dict):
            if not isinstance(m.get("name"), str):
                raise ConfigError(f"{where}: method entry {m!r} needs 'name: <method>' (see: bench ls methods)")
            if m.get("preset") is not None and not isinstance(m["preset"], str):
                raise ConfigError(f"{where}: method {m['name']}: preset must be a name, got {m['preset']!r}")
            if m.get("cfg") is not None and not isinstance(m["cfg"], dict):
                raise ConfigError(f"{where}: method {m['name']}: cfg must be a mapping such as {{r: 4}}, "
                                  f"got {m['cfg']!r}")
        elif not isinstance(m, str):
            raise ConfigError(f"{where}: method entry {m!r} must be a name or a mapping with 'name'")
    return methods


def _head(head: Any, where: str) -> dict[str, Any]:
    if head is None:
        return {}
    if not isinstance(head, dict):
        raise ConfigError(f"{where}: head must be a mapping such as {{hidden: 256, dropout: 0.5}}, got {head!r}")
    out = dict(head)
    if "hidden" in head:
        out["hidden"] = _whole(head["hidden"], f"{where}: head.hidden", 1, MAX_WIDTH)
    if "dropout" in head:
        x = as_number(head["dropout"])
        if x is None or not 0 <= x < 1:
            raise ConfigError(f"{where}: head.dropout must be a number in [0, 1), got {head['dropout']!r}")
        out["dropout"] = x
    return out


def _str_or_per_dataset(grid: dict[str, Any], key: str, where: str) -> None:
    v = grid.get(key)
    if v is None or isinstance(v, str):
        return
    if isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        return
    raise ConfigError(f"{where}: {key} must be a string or a mapping dataset: string, got {v!r}")
