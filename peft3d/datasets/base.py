"""Dataset contract: every family yields train / val / test arrays plus an identity record.

Arrays: ``points`` float32 ``(N, P, 3)``, ``labels`` int64 ``(N,)``. The validation split is carved from the
training set, class-stratified and seeded (protocol.md); its member indices are part of the identity.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from peft3d.core.digest import array_sha256
from peft3d.core.errors import DataError


@dataclass
class Split:
    points: np.ndarray  # (N, P, 3) float32
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> Split:
        return Split(self.points[idx], self.labels[idx])


@dataclass
class PointCloudData:
    name: str
    variant: str
    class_names: list[str]
    train: Split
    val: Split
    test: Split
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def cache_key(self, split: str) -> str:
        """A readable label for the on-disk evaluation-sampling cache of ``split`` (``eval_points(...,
        cache_key=...)``); the cache also hashes the array content, so a stale label can never serve wrong data."""
        return f"{self.name}-{self.variant}-{split}-{self.identity.get('val_indices_sha256', '')}"


def validate_split(split: Split, num_classes: int, where: str) -> None:
    """Shape, dtype, finiteness and label range; one clear line on failure."""
    p, y = split.points, split.labels
    if p.ndim != 3 or p.shape[-1] != 3:
        raise DataError(f"{where}: points must have shape (N, P, 3), got {p.shape}")
    if y.ndim != 1 or len(y) != len(p):
        raise DataError(f"{where}: labels must have shape ({len(p)},), got {y.shape}")
    if not np.isfinite(p).all():
        bad = int((~np.isfinite(p)).any(axis=(1, 2)).sum())
        raise DataError(f"{where}: {bad} sample(s) contain NaN/Inf coordinates; re-download or fix the file")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{where}: labels must lie in [0, {num_classes - 1}], found [{y.min()}, {y.max()}]")


def stratified_val_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): ``round(fraction * n_c)`` samples of each class c (at least 1 when the class
    has >= 2 samples) go to validation, chosen by a seeded permutation. Deterministic across machines."""
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = round(fraction * len(idx))
        n_val = max(n_val, 1) if len(idx) >= 2 else 0
        val.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx




class DatasetFamily:
    """Subclasses set ``name`` and implement ``load_raw``: returns (train Split, test Split, class_names, source
    identity). ``variants``, ``default_variant``, ``needs_root`` and the published ``counts`` are read from the
    registry entry (peft3d/datasets/__init__.py), the one place that states them."""

    name: ClassVar[str]
    variants: ClassVar[tuple[str, ...]]
    default_variant: ClassVar[str]
    needs_root: ClassVar[bool]
    counts: ClassVar[dict[str, dict[str, int]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from peft3d.datasets import DATASETS  # the package's registry (it imports no dataset module)

        meta = DATASETS.meta(cls.name)
        cls.variants, cls.default_variant = tuple(meta["variants"]), meta["default_variant"]
        cls.needs_root, cls.counts = meta["needs_root"], meta.get("counts", {})

    def load_raw(self, variant: str, root: str | None) -> tuple[Split, Split, list[str], dict[str, Any]]:
        raise NotImplementedError

    def expected(self, variant: str, root: str | None) -> dict[str, Any] | None:
        """What a complete copy holds: ``{"counts": {"train": n, "test": m}, "points": P, "classes": C,
        "basis": "published" | ...}`` (``bench data check`` compares against it); None when nothing is known."""
        return None

    def check_files(self, variant: str, root: str | None) -> None:
        """Cheap presence/structure check (no full read, no torch); raises DataError with the fix."""

    def info(self) -> str:
        """Expected layout and download sources (``bench data info``)."""
        return (self.__doc__ or self.name).strip()

    def load(self, variant: str | None, root: str | None, val_fraction: float = 0.1,
             split_seed: int = 0) -> PointCloudData:
        """Train / val / test of ``variant``. A variant ``<v>_n<k>`` (listed in the registry like any other) is
        ``<v>`` with at most ``k`` labelled training samples per class: the same validation split and test set
        as ``<v>``, carved first, then a seeded per-class subset of what remains for training (a data-efficiency
        curve then varies only the training labels)."""
        variant = variant or self.default_variant
        if variant not in self.variants:
            raise DataError(f"{self.name}: unknown variant {variant!r}; choose one of {list(self.variants)}")
        base, per_class = few_label_parts(variant)
        train_full, test, names, source = self.load_raw(base, root)
        for split, which in ((train_full, "train"), (test, "test")):
            validate_split(split, len(names), f"{self.name}/{variant} {which}")
        tr, va = stratified_val_split(train_full.labels, val_fraction, split_seed)
        extra: dict[str, Any] = {}
        if per_class is not None:
            tr = per_class_subset(train_full.labels, tr, per_class, split_seed)
            extra = {"train_per_class": per_class, "train_indices_sha256": array_sha256(tr)[:16]}
        identity = dict(source, name=self.name, variant=variant, val_fraction=val_fraction,
                        split_seed=split_seed, val_indices_sha256=array_sha256(va)[:16], **extra,
                        counts={"train": len(tr), "val": len(va), "test": len(test)})
        return PointCloudData(self.name, variant, names, train_full.subset(tr), train_full.subset(va), test,
                              identity)


def few_label_parts(variant: str) -> tuple[str, int | None]:
    """``"f0_n5"`` -> ``("f0", 5)``; any other variant -> ``(variant, None)``."""
    m = re.fullmatch(r"(.+)_n(\d+)", variant)
    return (m[1], int(m[2])) if m else (variant, None)


def per_class_subset(labels: np.ndarray, idx: np.ndarray, k: int, seed: int) -> np.ndarray:
    """At most ``k`` of ``idx`` per class (all of a smaller class), by a seeded permutation; sorted. Nested:
    the subset for ``k`` contains the subset for every smaller ``k`` (the same permutation is cut shorter)."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(idx[labels[idx] == c])[:k] for c in np.unique(labels[idx])]
    return np.sort(np.concatenate(keep)) if keep else idx[:0]
