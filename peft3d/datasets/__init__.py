"""Dataset registry. A grid names ``family`` or ``family/variant`` (e.g. ``scanobjectnn/pb_t50_rs``).

This is the one place that states a dataset's metadata (the dataset classes read it): ``variants``,
``default_variant``, ``classes``, ``needs_root`` (files the user provides), published ``counts`` per variant,
``summary`` (``bench ls datasets``) and ``tag``, the short name in preset names such as
``paper_{backbone}_{dataset_tag}``. Torch-free: ``bench ls`` and ``bench validate`` read it.
"""
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
DATASETS.register("sweethome3d", "peft3d.datasets.sweethome3d:SweetHome3D",
                  variants=(*(f"s{i}" for i in range(5)), *(f"f{i}" for i in range(5)), *_SH3D_FEW), classes=19,
                  default_variant="s0", needs_root=False,
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
