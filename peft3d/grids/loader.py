"""YAML grids with ``include:`` inheritance, expanded into RunSpecs. Torch-free.

A grid names axes (backbones, weights, methods, datasets, seeds), the budget and per-method settings.
Unknown keys, unknown names and invalid method settings fail here, before any training starts.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft3d.core.errors import ConfigError
from peft3d.core.spec import Budget, PipelineCfg, RunSpec, TokenizerCfg, from_mapping
from peft3d.grids.catalog import GRID_DIR, GridCatalog
from peft3d.grids.checks import cell_pipeline, check_combination
from peft3d.grids.plan import TuningPlan, check_plan_against, check_precision_seeds, parse_plan
from peft3d.grids.validate import check_device, check_grid

__all__ = ["GRID_DIR", "ExpandedGrid", "GridCatalog", "compare_to", "expand", "expand_grid", "grid_path",
           "list_grids", "load_grid"]

KEYS = {"description", "include", "backbones", "weights", "methods", "datasets", "seeds", "protocol",
        "num_points", "budget", "tokenizer", "head", "method_cfg", "data_root", "device", "compare_to",
        "checkpoint_every", "pipeline", "also", "tuning"}
REQUIRED = ("backbones", "methods", "datasets")


@dataclass(frozen=True)
class MethodEntry:
    name: str
    preset: str | None = None
    cfg: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ExpandedGrid:
    """A grid read, checked and expanded once; commands pass this down instead of the grid's name."""

    name: str  # the file's stem: results/tables/<name>.md, RunSpec.grid, the MLflow experiment
    path: Path
    specs: list[RunSpec]
    compare_to: str  # the method its tables compare the others with
    description: str = ""
    tuning: TuningPlan = TuningPlan()  # how ``bench tune`` searches its cells (the grid's ``tuning:`` block)


def grid_path(name: str, catalog: GridCatalog | None = None) -> Path:
    return (catalog or GridCatalog()).path(name)


def list_grids(catalog: GridCatalog | None = None) -> list[str]:
    return (catalog or GridCatalog()).names()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_grid(name: str, catalog: GridCatalog | None = None, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a grid with its includes resolved (later files override earlier ones; mappings merge)."""
    catalog = catalog or GridCatalog()
    path = catalog.path(name).resolve()
    if path in _seen:
        raise ConfigError(f"grid include cycle: {' -> '.join(p.name for p in (*_seen, path))}")
    data = catalog.read(path)
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ConfigError(f"grid {path.name}: unknown key(s) {unknown}; allowed: {sorted(KEYS)}")
    merged: dict[str, Any] = {}
    for inc in _includes(data.pop("include", None), path):
        merged = _merge(merged, load_grid(inc, catalog, (*_seen, path)))
    if "methods" in data and "compare_to" not in data:
        merged.pop("compare_to", None)  # a comparison belongs to the methods list it was written for
    return _merge(merged, data)


def _includes(includes: Any, path: Path) -> list[str]:
    """``include:`` entries as names or paths: a ``*.yaml`` entry is relative to the including file."""
    out = []
    for inc in [includes] if isinstance(includes, str) else (includes or []):
        if not isinstance(inc, str):
            raise ConfigError(f"grid {path.name}: include entries must be grid names or .yaml paths, got {inc!r}")
        out.append(inc if Path(inc).is_absolute() or not inc.endswith((".yaml", ".yml")) else str(path.parent / inc))
    return out


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


def compare_to(name: str, catalog: GridCatalog | None = None) -> str:
    """The method a grid's tables compare the others with: its ``compare_to``, else its first method."""
    return _compare_to(load_grid(name, catalog), Path(name).stem)


def _compare_to(grid: dict[str, Any], grid_name: str) -> str:
    methods = [e.name for e in _method_entries(grid)]
    chosen = grid.get("compare_to", methods[0])
    if chosen not in methods:
        raise ConfigError(f"grid {grid_name}: compare_to {chosen!r} is not one of its methods {methods}")
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
           device: str | None = None, catalog: GridCatalog | None = None) -> list[RunSpec]:
    """All RunSpecs of a grid, validated (names, method configs, budget) without importing torch."""
    return expand_grid(name, seeds, data_roots, device, catalog).specs


def expand_grid(name: str, seeds: list[int] | None = None, data_roots: dict[str, str] | None = None,
                device: str | None = None, catalog: GridCatalog | None = None) -> ExpandedGrid:
    """The grid read (each file once), checked (once per merged grid) and expanded into RunSpecs.

    ``also:`` lists variants: each is a mapping merged over the grid (it may ``include:`` preset files, merged
    first) and expanded like the grid itself; the grid's runs and every variant's runs together are the grid.
    """
    catalog = catalog or GridCatalog()
    path = catalog.path(name)
    grid = load_grid(name, catalog)
    grid_name = Path(name).stem
    if device is not None:
        check_device(device, "--device")
    if seeds is not None:
        seeds = check_grid({"seeds": seeds}, grid_name)["seeds"]
    variants = grid.pop("also", None) or []
    if not isinstance(variants, list):
        raise ConfigError(f"grid {grid_name}: 'also' must be a list of mappings")
    _as_list(grid, "methods")
    grid = check_grid(grid, grid_name)  # types and ranges first: compare_to reads the method entries
    chosen = _compare_to(grid, grid_name)
    specs = _expand_one(grid, grid_name, seeds, data_roots, device)
    for i, over in enumerate(variants):
        merged = check_grid(_variant(grid, over, path, i, catalog), grid_name)
        specs += _expand_one(merged, grid_name, seeds, data_roots, device)
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"grid {grid_name}: two entries expand to the same run (duplicate axis values or "
                          "variants?)")
    plan = parse_plan(grid.get("tuning"), f"grid {grid_name}")
    if plan.pooled:
        have: dict[str, set[str]] = {}
        for s in specs:
            have.setdefault(s.dataset, set()).add(s.variant)
        check_plan_against(plan, have, f"grid {grid_name}")
    check_precision_seeds(plan, {s.seed for s in specs}, f"grid {grid_name}")
    return ExpandedGrid(grid_name, path, specs, chosen, str(grid.get("description", "")), plan)


def _variant(grid: dict[str, Any], over: Any, path: Path, i: int, catalog: GridCatalog) -> dict[str, Any]:
    if not isinstance(over, dict):
        raise ConfigError(f"grid {path.stem}: also[{i}] must be a mapping, got {over!r}")
    over = dict(over)
    unknown = sorted(set(over) - (KEYS - {"also", "description", "tuning"}))  # one plan per grid
    if unknown:
        raise ConfigError(f"grid {path.stem}: also[{i}] has unknown key(s) {unknown}")
    merged = grid
    for inc in _includes(over.pop("include", None), path.resolve()):
        merged = _merge(merged, load_grid(inc, catalog))
    merged = _merge(merged, over)
    merged.pop("also", None)
    return merged


def _expand_one(grid: dict[str, Any], grid_name: str, seeds: list[int] | None, data_roots: dict[str, str] | None,
                device: str | None) -> list[RunSpec]:
    from peft3d.backbones import BACKBONES
    from peft3d.datasets import DATASETS, split_name
    from peft3d.datasets.protocols import get_protocol
    from peft3d.methods import METHODS, config_class

    for key in REQUIRED:  # ``grid`` has passed check_grid
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
