"""Deterministic synthetic point clouds: the embedded default dataset (no download).

Twelve shape classes sampled on their surfaces. ``clean``: canonical pose, mild anisotropic scale.
``scan``: like a real scan (ScanObjectNN PB-T50-RS in spirit): random rotation about the up axis (y),
a random occluding half-space removes part of the object, background clutter points (a floor patch and
floating outliers) replace part of the cloud, and Gaussian jitter. Everything follows from ``seed``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from peft3d.core.digest import array_sha256
from peft3d.datasets.base import DatasetFamily, Split

Sampler = Callable[[np.random.Generator, int], np.ndarray]


def _sphere(r, n):
    v = r.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _box(r, n, half=(1.0, 1.0, 1.0)):
    h = np.asarray(half)
    p = r.uniform(-1, 1, size=(n, 3)) * h
    axis = r.choice(3, size=n, p=_face_weights(h))
    p[np.arange(n), axis] = np.sign(r.uniform(-1, 1, size=n)) * h[axis]
    return p


def _face_weights(h):
    areas = np.array([h[1] * h[2], h[0] * h[2], h[0] * h[1]])
    return areas / areas.sum()


def _cylinder(r, n, radius=0.6, height=1.0):
    t = r.uniform(0, 2 * np.pi, n)
    y = r.uniform(-height, height, n)
    return np.stack([radius * np.cos(t), y, radius * np.sin(t)], 1)


def _cone(r, n):
    y = 1 - np.sqrt(r.uniform(0, 1, n)) * 2  # denser at the base, like the surface area
    rad = 0.7 * (1 - y) / 2
    t = r.uniform(0, 2 * np.pi, n)
    return np.stack([rad * np.cos(t), y, rad * np.sin(t)], 1)


def _torus(r, n, R=0.7, a=0.25):
    u, v = r.uniform(0, 2 * np.pi, n), r.uniform(0, 2 * np.pi, n)
    return np.stack([(R + a * np.cos(v)) * np.cos(u), a * np.sin(v), (R + a * np.cos(v)) * np.sin(u)], 1)


def _pyramid(r, n):
    base = r.uniform(-1, 1, (n, 2))
    h = r.uniform(0, 1, n)
    return np.stack([base[:, 0] * (1 - h), 2 * h - 1, base[:, 1] * (1 - h)], 1)


def _disk(r, n):
    rad, t = np.sqrt(r.uniform(0, 1, n)), r.uniform(0, 2 * np.pi, n)
    return np.stack([rad * np.cos(t), r.normal(0, 0.02, n), rad * np.sin(t)], 1)


def _dumbbell(r, n):
    p = _sphere(r, n) * 0.4
    p[:, 0] += np.where(r.uniform(size=n) < 0.5, -0.6, 0.6)
    return p


def _table(r, n):
    k = n // 2
    top = _box(r, k, (1.0, 0.05, 0.7)) + [0, 0.5, 0]
    legs = _cylinder(r, n - k, 0.06, 0.5)
    corner = r.integers(0, 4, n - k)
    legs[:, 0] += np.where(corner % 2 == 0, -0.85, 0.85)
    legs[:, 2] += np.where(corner < 2, -0.55, 0.55)
    return np.concatenate([top, legs])


def _chair(r, n):
    k = n // 3
    seat = _box(r, k, (0.6, 0.05, 0.6))
    back = _box(r, k, (0.6, 0.5, 0.05)) + [0, 0.55, -0.55]
    legs = _cylinder(r, n - 2 * k, 0.05, 0.45) + [0, -0.5, 0]
    c = r.integers(0, 4, n - 2 * k)
    legs[:, 0] += np.where(c % 2 == 0, -0.5, 0.5)
    legs[:, 2] += np.where(c < 2, -0.5, 0.5)
    return np.concatenate([seat, back, legs])


def _cross(r, n):
    k = n // 2
    return np.concatenate([_box(r, k, (1.0, 0.2, 0.2)), _box(r, n - k, (0.2, 1.0, 0.2))])


def _helix(r, n):
    t = r.uniform(0, 4 * np.pi, n)
    return np.stack([0.7 * np.cos(t), t / (2 * np.pi) - 1, 0.7 * np.sin(t)], 1) + r.normal(0, 0.06, (n, 3))


SHAPES: dict[str, Sampler] = {
    "sphere": _sphere, "cube": _box, "cylinder": _cylinder, "cone": _cone, "torus": _torus,
    "pyramid": _pyramid, "disk": _disk, "dumbbell": _dumbbell, "table": _table, "chair": _chair,
    "cross": _cross, "helix": _helix,
}


def _rot_y(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _normalise(p: np.ndarray) -> np.ndarray:
    p = p - p.mean(0)
    return p / max(np.linalg.norm(p, axis=1).max(), 1e-9)


def make_sample(rng: np.random.Generator, shape: str, n: int, scan: bool) -> np.ndarray:
    """One object of ``shape`` with ``n`` points, float32 (n, 3)."""
    over = 2 * n if scan else n  # scan: sample extra so occlusion can remove some
    p = SHAPES[shape](rng, over) * rng.uniform(0.8, 1.2, 3)  # anisotropic scale
    if not scan:
        return _normalise(p).astype(np.float32)
    p = p @ _rot_y(rng.uniform(-np.pi, np.pi)).T
    d = _sphere(rng, 1)[0]
    keep = p @ d < np.quantile(p @ d, rng.uniform(0.7, 0.95))  # occluding half-space: drop 5-30%
    p = p[keep]
    n_obj = int(n * rng.uniform(0.75, 0.9))
    p = p[rng.choice(len(p), n_obj, replace=len(p) < n_obj)]
    n_floor = (n - n_obj) // 2
    floor = np.stack([rng.uniform(-1.3, 1.3, n_floor), np.full(n_floor, p[:, 1].min() - 0.05),
                      rng.uniform(-1.3, 1.3, n_floor)], 1)
    noise = rng.uniform(-1.3, 1.3, (n - n_obj - n_floor, 3))
    p = np.concatenate([p, floor, noise]) + rng.normal(0, 0.01, (n, 3))
    return _normalise(p[rng.permutation(n)]).astype(np.float32)


def generate(variant: str, per_class: int, n_points: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    pts, labels = [], []
    for c, shape in enumerate(SHAPES):
        for _ in range(per_class):
            pts.append(make_sample(rng, shape, n_points, variant == "scan"))
            labels.append(c)
    return Split(np.stack(pts), np.asarray(labels, dtype=np.int64))


class Synthetic(DatasetFamily):
    name = "synthetic"
    TRAIN_PER_CLASS, TEST_PER_CLASS, POINTS, SEED = 40, 20, 1024, 20240411

    def splits(self, variant: str, points: int | None = None) -> tuple[Split, Split]:
        """(train, test) as ``load_raw`` makes them; ``points`` per sample overrides ``POINTS`` (export uses
        2048, ScanObjectNN's count)."""
        n = points or self.POINTS
        return (generate(variant, self.TRAIN_PER_CLASS, n, self.SEED),
                generate(variant, self.TEST_PER_CLASS, n, self.SEED + 1))

    def load_raw(self, variant: str, root: str | None) -> tuple[Split, Split, list[str], dict[str, Any]]:
        train, test = self.splits(variant)
        source = {"source": f"synthetic(seed={self.SEED})", "sha256": {
            "train": array_sha256(train.points, train.labels)[:16],
            "test": array_sha256(test.points, test.labels)[:16]}}
        return train, test, list(SHAPES), source

    def expected(self, variant: str, root: str | None) -> dict[str, Any]:
        return {"counts": {"train": self.TRAIN_PER_CLASS * len(SHAPES), "test": self.TEST_PER_CLASS * len(SHAPES)},
                "points": self.POINTS, "classes": len(SHAPES), "basis": "generator"}

    def info(self) -> str:
        return (f"synthetic — {len(SHAPES)} shape classes generated on the fly (seed {self.SEED}); no download, "
                f"no root.\n  {self.TRAIN_PER_CLASS * len(SHAPES)} train / {self.TEST_PER_CLASS * len(SHAPES)} test, "
                f"{self.POINTS} points per sample; variants: clean (canonical pose), scan (rotated, occluded, "
                f"cluttered, jittered).\n  Export it in a published layout to exercise the real readers:\n"
                f"    bench data export synthetic --format scanobjectnn --out DIR\n"
                f"    bench data check scanobjectnn --root DIR")
