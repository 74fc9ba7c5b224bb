"""Dataset registry. A grid names ``family`` or ``family/variant`` (e.g. ``scanobjectnn/pb_t50_rs``).

This is the one place that states a dataset's metadata (the dataset classes read it): ``variants``,
``default_variant``, ``classes``, ``needs_root`` (files the user provides), published ``counts`` per variant,
``summary`` (``bench ls datasets``) and ``tag``, the short name in preset names such as
``paper_{backbone}_{dataset_tag}``. Torch-free: ``bench ls``, ``bench validate`` and the tables read it.

Optional ``fold_groups``: the variants that are the folds of one k-fold partition, so tables treat them as
replicates of one dataset cell (``family/<group>``, replicate unit (fold, seed)) instead of k datasets::

    fold_groups={"cv5": {"folds": ["f0", "f1", "f2", "f3", "f4"]},
                 "cv5_n5": {"folds": ["f0_n5", ..., "f4_n5"], "per_class": 5, "subsample_of": "cv5"}}

``per_class``: at most that many labelled training models per class (a data-efficiency curve's x); absent means
every labelled model. ``subsample_of``: the group whose partition this one subsamples (the curve's "all" point).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peft3d.core.errors import ConfigError
from peft3d.core.registry import Registry

DATASETS = Registry("dataset", group="dataset",
                    required=("variants", "default_variant", "classes", "needs_root", "summary"))
DATASETS.register("synthetic", "peft3d.datasets.synthetic:Synthetic", variants=("clean", "scan"), classes=12,
                  default_variant="scan", needs_root=False, tag="synthetic",
                  counts={"clean": {"train": 480, "test": 240}, "scan": {"train": 480, "test": 240}},
                  summary="deterministic synthetic shapes (embedded default); scan = rotated, occluded, cluttered")
DATASETS.register("scanobjectnn", "peft3d.datasets.scanobjectnn:ScanObjectNN",
                  variants=("pb_t50_rs", "obj_bg", "obj_only"), classes=15, default_variant="pb_t50_rs",
                  needs_root=True, tag="scan", counts={"pb_t50_rs": {"train": 11416, "test": 2882},
                                           "obj_bg": {"train": 2309, "test": 581},
                                           "obj_only": {"train": 2309, "test": 581}},
                  summary="ScanObjectNN real scans, official h5_files (root = the h5_files folder)")
DATASETS.register("modelnet40", "peft3d.datasets.modelnet40:ModelNet40",
                  variants=("auto", "fps_cache", "ply_hdf5_2048", "normal_resampled"), classes=40,
                  default_variant="auto", needs_root=True, tag="mn40",
                  counts={"fps_cache": {"train": 9843, "test": 2468}, "normal_resampled": {"train": 9843, "test": 2468},
                          "ply_hdf5_2048": {"train": 9840, "test": 2468}},
                  summary="ModelNet40 CAD; Point-BERT .dat cache, PointNet HDF5 or PointNet++ txt (auto-detected)")
# Sweet Home 3D: s<i> hold-out splits, f<i> the folds of a 5-fold partition, f<i>_n<k> fold i with at most k training
# models per class (data-efficiency curves). Counts: package 1.8-1, class table v2 (451 models; test sizes per fold
# differ by at most one model).
_SH3D_FEW = tuple(f"f{i}_n{k}" for i in range(5) for k in (5, 10, 20))
_SH3D_FOLDS = {"cv5": {"folds": [f"f{i}" for i in range(5)]},
               **{f"cv5_n{k}": {"folds": [f"f{i}_n{k}" for i in range(5)], "per_class": k, "subsample_of": "cv5"}
                  for k in (5, 10, 20)}}
DATASETS.register("sweethome3d", "peft3d.datasets.sweethome3d:SweetHome3D",
                  variants=(*(f"s{i}" for i in range(5)), *(f"f{i}" for i in range(5)), *_SH3D_FEW), classes=19,
                  default_variant="s0", needs_root=False, fold_groups=_SH3D_FOLDS,
                  tag="mn40",  # clean CAD-like meshes in the unit sphere: the ModelNet40 presets apply
                  counts={**{f"s{i}": {"train": 339, "test": 112} for i in range(5)},
                          **{f"f{i}": {"train": 451 - n, "test": n} for i, n in enumerate((91, 90, 90, 90, 90))}},
                  summary="Sweet Home 3D furniture meshes (Debian sweethome3d-furniture; CC0 / CC-BY 3.0), "
                          "19 ModelNet-like classes; s0..s4 = seeded stratified splits, f0..f4 = 5-fold CV")


def split_name(name: str) -> tuple[str, str | None]:
    """``'scanobjectnn/pb_t50_rs'`` -> ``('scanobjectnn', 'pb_t50_rs')``; ``'modelnet40'`` -> (..., None)."""
    family, _, variant = name.partition("/")
    return family, (variant or None)


def check_root(name: str, variant: str | None, root: str | None) -> str | None:
    """One line describing what is wrong with ``root`` for dataset ``name`` (``family`` or ``family/variant``),
    or None when its files are present and structurally right. Cheap (no full read) and torch-free: it is what
    ``bench validate`` runs before any training."""
    from peft3d.core.errors import DataError

    family, v = split_name(name)
    meta = DATASETS.meta(family)
    variant = variant or v or meta["default_variant"]
    if variant not in meta["variants"]:
        return f"dataset {family} has no variant {variant!r}; choose one of {list(meta['variants'])}"
    if not root:
        return (f"dataset {family} needs its files: pass --data-root {family}=PATH "
                f"(see: bench data info {family})") if meta.get("needs_root", True) else None
    try:
        DATASETS.get(family)().check_files(variant, root)
    except DataError as e:
        return str(e)
    return None


@dataclass(frozen=True)
class FoldGroup:
    """Variants of one dataset that are the folds of one k-fold partition (see ``fold_groups`` above)."""

    family: str
    name: str
    folds: tuple[str, ...]
    per_class: int | None = None  # labelled training models per class; None: all of them
    subsample_of: str | None = None  # the group whose partition this one subsamples

    @property
    def dataset(self) -> str:
        """How tables name the pooled cell: ``family/<group>``."""
        return f"{self.family}/{self.name}"


def fold_groups(family: str) -> dict[str, FoldGroup]:
    """The fold groups a dataset declares (empty when none), checked: one line naming the dataset and the fix
    when the declaration is malformed (a plugin's included)."""
    meta = DATASETS.meta(family)
    raw = meta.get("fold_groups") or {}
    where = f"dataset {family!r} (from {DATASETS.origin(family)}): fold_groups"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must map a group name to {{folds: [variants], per_class?, subsample_of?}}")
    groups = {name: _fold_group(family, name, spec, set(meta["variants"]), where) for name, spec in raw.items()}
    seen: dict[str, str] = {}
    for g in groups.values():
        for v in g.folds:
            if v in seen:
                raise ConfigError(f"{where}: variant {v!r} is a fold of both {seen[v]!r} and {g.name!r}; a "
                                  "variant belongs to one partition")
            seen[v] = g.name
        if g.subsample_of is not None and g.subsample_of not in groups:
            raise ConfigError(f"{where}[{g.name!r}].subsample_of names no group ({g.subsample_of!r}); "
                              f"groups: {sorted(groups)}")
    return groups


def _fold_group(family: str, name: str, spec: Any, variants: set[str], where: str) -> FoldGroup:
    here = f"{where}[{name!r}]"
    if not isinstance(spec, dict) or set(spec) - {"folds", "per_class", "subsample_of"}:
        raise ConfigError(f"{here} must be a mapping with keys folds, per_class (optional), subsample_of "
                          f"(optional), got {spec!r}")
    folds = spec.get("folds")
    if not isinstance(folds, (list, tuple)) or len(folds) < 2 or len(set(folds)) != len(folds):
        raise ConfigError(f"{here}.folds must list at least two distinct variants, got {folds!r}")
    unknown = [v for v in folds if v not in variants]
    if unknown or name in variants:
        what = f"folds {unknown} are not variants of {family}" if unknown else \
            f"the group name {name!r} is also a variant"
        raise ConfigError(f"{here}: {what}; fix the declaration")
    per_class = spec.get("per_class")
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1):
        raise ConfigError(f"{here}.per_class must be a whole number >= 1, got {per_class!r}")
    return FoldGroup(family, name, tuple(folds), per_class, spec.get("subsample_of"))


def fold_group_of(family: str, variant: str) -> FoldGroup | None:
    """The fold group ``variant`` of ``family`` belongs to, or None (a hold-out split, or an unknown dataset:
    a result from another checkout stays its own cell)."""
    if family not in DATASETS:
        return None
    return next((g for g in fold_groups(family).values() if variant in g.folds), None)
