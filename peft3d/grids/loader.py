"""YAML grids with ``include:`` inheritance, expanded into RunSpecs. Torch-free.

A grid names axes (backbones, weights, methods, datasets, seeds), the budget and per-method settings.
Unknown keys, unknown names and invalid method settings fail here, before any training starts.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from peft3d.core.errors import ConfigError
from peft3d.core.spec import Budget, PipelineCfg, RunSpec, TokenizerCfg, from_mapping
from peft3d.grids.checks import cell_pipeline, check_combination
from peft3d.grids.validate import check_device, check_grid

GRID_DIR = Path(__file__).parent / "files"
KEYS = {"description", "include", "backbones", "weights", "methods", "datasets", "seeds", "protocol",
        "num_points", "budget", "tokenizer", "head", "method_cfg", "data_root", "device", "compare_to",
        "checkpoint_every", "pipeline", "also"}
REQUIRED = ("backbones", "methods", "datasets")


@dataclass(frozen=True)
class MethodEntry:
    name: str
    preset: str | None = None
    cfg: tuple[tuple[str, Any], ...] = ()


def grid_path(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    q = GRID_DIR / f"{name}.yaml"
    if q.exists():
        return q
    import difflib

    names = list_grids()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ConfigError(f"unknown grid '{name}'{hint} (known: {', '.join(names)}; or pass a path to a .yaml file)")


def list_grids() -> list[str]:
    return sorted(p.stem for p in GRID_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"grid {path}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"grid {path}: must be a YAML mapping, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_grid(name: str, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a grid with its includes resolved (later files override earlier ones; mappings merge)."""
    path = grid_path(name).resolve()
    if path in _seen:
        raise ConfigError(f"grid include cycle: {' -> '.join(p.name for p in (*_seen, path))}")
    data = _read_yaml(path)
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ConfigError(f"grid {path.name}: unknown key(s) {unknown}; allowed: {sorted(KEYS)}")
    includes = data.pop("include", None) or []
    merged: dict[str, Any] = {}
    for inc in [includes] if isinstance(includes, str) else includes:
        target = inc if Path(inc).is_absolute() else str(path.parent / inc) if inc.endswith(".yaml") else inc
        merged = _merge(merged, load_grid(target, (*_seen, path)))
    if "methods" in data and "compare_to" not in data:
        merged.pop("compare_to", None)  # a comparison belongs to the methods list it was written for
    return _merge(merged, data)


def _as_list(grid: dict[str, Any], key: str, default: list | None = None) -> list:
    v = grid.get(key, default)
    if v is None:
        raise ConfigError(f"grid: '{key}' is required")
    v = v if isinstance(v, list) else [v]
    if not v:
        raise ConfigError(f"grid: '{key}' is empty")
    return v


def _method_entries(grid: dict[str, Any]) -> list[MethodEntry]:
    out = []
    for m in _as_list(grid, "methods"):
        if isinstance(m, str):
            out.append(MethodEntry(m))
        elif isinstance(m, dict):
            extra = sorted(set(m) - {"name", "preset", "cfg"})
            if "name" not in m or extra:
                raise ConfigError(f"grid: method entry {m} must have 'name' and only 'preset', 'cfg' besides")
            out.append(MethodEntry(m["name"], m.get("preset"), tuple(sorted((m.get("cfg") or {}).items()))))
        else:
            raise ConfigError(f"grid: method entry {m!r} must be a name or a mapping")
    return out


def compare_to(name: str) -> str:
    """The method a grid's tables compare the others with: its ``compare_to``, else its first method."""
    grid = load_grid(name)
    methods = [e.name for e in _method_entries(grid)]
    chosen = grid.get("compare_to", methods[0])
    if chosen not in methods:
        raise ConfigError(f"grid {Path(name).stem}: compare_to {chosen!r} is not one of its methods {methods}")
    return chosen


def _data_root(grid: dict[str, Any], family: str, overrides: dict[str, str]) -> str | None:
    if family in overrides:
        return overrides[family]
    root = grid.get("data_root")
    if isinstance(root, dict):
        return root.get(family)
    return root


def _checkpoint_every(grid: dict[str, Any]) -> int:
    every = grid.get("checkpoint_every", RunSpec.checkpoint_every)
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ConfigError(f"grid checkpoint_every: expected an integer >= 1 (epochs between "
                          f"checkpoints), got {every!r}")
    return every


def expand(name: str, seeds: list[int] | None = None, data_roots: dict[str, str] | None = None,
           device: str | None = None) -> list[RunSpec]:
    """All RunSpecs of a grid, validated (names, method configs, budget) without importing torch.

    ``also:`` lists variants: each is a mapping merged over the grid (it may ``include:`` preset files, merged
    first) and expanded like the grid itself; the grid's runs and every variant's runs together are the grid.
    """
    grid = load_grid(name)
    grid_name = Path(name).stem
    if device is not None:
        check_device(device, "--device")
    if seeds is not None:
        seeds = check_grid({"seeds": seeds}, grid_name)["seeds"]
    variants = grid.pop("also", None) or []
    if not isinstance(variants, list):
        raise ConfigError(f"grid {grid_name}: 'also' must be a list of mappings")
    _as_list(grid, "methods")
    check_grid(grid, grid_name)  # types and ranges first: compare_to reads the method entries
    compare_to(name)
    specs = _expand_one(grid, grid_name, seeds, data_roots, device)
    for i, over in enumerate(variants):
        specs += _expand_one(_variant(grid, over, name, i), grid_name, seeds, data_roots, device)
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"grid {grid_name}: two entries expand to the same run (duplicate axis values or "
                          "variants?)")
    return specs


def _variant(grid: dict[str, Any], over: Any, name: str, i: int) -> dict[str, Any]:
    if not isinstance(over, dict):
        raise ConfigError(f"grid {Path(name).stem}: also[{i}] must be a mapping, got {over!r}")
    over = dict(over)
    unknown = sorted(set(over) - (KEYS - {"also", "description"}))
    if unknown:
        raise ConfigError(f"grid {Path(name).stem}: also[{i}] has unknown key(s) {unknown}")
    includes = over.pop("include", None) or []
    merged = grid
    base = grid_path(name).resolve().parent
    for inc in [includes] if isinstance(includes, str) else includes:
        merged = _merge(merged, load_grid(str(base / inc) if inc.endswith(".yaml") else inc))
    merged = _merge(merged, over)
    merged.pop("also", None)
    return merged


def _expand_one(grid: dict[str, Any], grid_name: str, seeds: list[int] | None, data_roots: dict[str, str] | None,
                device: str | None) -> list[RunSpec]:
    from peft3d.backbones import BACKBONES
    from peft3d.datasets import DATASETS, split_name
    from peft3d.datasets.protocols import get_protocol
    from peft3d.methods import METHODS, config_class

    grid = check_grid(grid, grid_name)
    for key in REQUIRED:
        _as_list(grid, key)
    budget = from_mapping(Budget, grid.get("budget"), "grid budget")
    tokenizer = from_mapping(TokenizerCfg, grid.get("tokenizer"), "grid tokenizer")
    pipeline = from_mapping(PipelineCfg, grid.get("pipeline"), "grid pipeline")
    head = grid.get("head") or {}
    if set(head) - {"hidden", "dropout"}:
        raise ConfigError(f"grid head: unknown key(s) {sorted(set(head) - {'hidden', 'dropout'})}")
    per_method = grid.get("method_cfg") or {}
    for m in per_method:
        METHODS.check(m)
    specs = []
    axes = itertools.product(_as_list(grid, "backbones"), _as_list(grid, "weights", ["pretrained"]),
                             _as_list(grid, "datasets"), _method_entries(grid),
                             seeds if seeds is not None else _as_list(grid, "seeds", [0]))
    for backbone, weights, dataset, entry, seed in axes:
        BACKBONES.check(backbone)
        METHODS.check(entry.name)
        cell = cell_pipeline(backbone, entry.name, pipeline, "pos_encoding" in (grid.get("pipeline") or {}))
        check_combination(backbone, str(weights), entry.name, cell, f"grid {grid_name}")
        family, variant = split_name(dataset)
        DATASETS.check(family)
        meta = DATASETS.meta(family)
        variant = variant or meta["default_variant"]
        if variant not in meta["variants"]:
            raise ConfigError(f"grid: dataset {family} has no variant {variant!r}; "
                              f"choose one of {list(meta['variants'])}")
        preset = entry.preset.format(backbone=backbone, dataset=family, dataset_tag=meta.get("tag", family)
                                     ) if entry.preset else None
        cfg_cls = config_class(entry.name)
        overrides = {**(per_method.get(entry.name) or {}), **dict(entry.cfg)}
        cfg = cfg_cls.resolve(overrides, preset, where=f"grid {grid_name}: method {entry.name}")
        protocol = grid.get("protocol", "plain")
        protocol = protocol.get(family, "plain") if isinstance(protocol, dict) else protocol
        get_protocol(protocol)
        specs.append(RunSpec(
            backbone=backbone, method=entry.name, dataset=family, variant=variant, weights=str(weights),
            method_cfg=cfg.to_dict(), preset=preset, protocol=protocol, num_points=int(grid.get("num_points", 1024)),
            seed=int(seed), budget=budget, tokenizer=tokenizer, head_hidden=int(head.get("hidden", 256)),
            head_dropout=float(head.get("dropout", 0.5)), pipeline=cell,
            data_root=_data_root(grid, family, data_roots or {}),
            device=device or grid.get("device", "cpu"), grid=grid_name,
            checkpoint_every=_checkpoint_every(grid)))
    return specs
