"""Data protocols: named presets of augmentation, point count and sampling (protocol.md).

Training batches: per sample a random subset of FPS candidates (:class:`peft3d.datasets.sampling.TrainSampler`),
then the preset's augmentation.
Evaluation: deterministic farthest point sampling to ``num_points`` (computed once per array), centred.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from peft3d.core.digest import array_sha256
from peft3d.core.errors import ConfigError


@dataclass(frozen=True)
class Protocol:
    name: str
    scale: tuple[float, float] | None = None  # per-axis uniform scaling range
    rotate_up: bool = False  # random rotation about the up axis (y), U[-pi, pi]
    translate: float = 0.0  # per-axis uniform translation in [-t, t]
    jitter: float = 0.0  # Gaussian jitter sigma (clipped at 5 sigma)
    unit_sphere: bool = False  # rescale to the unit sphere after centring
    description: str = ""

    def augment(self, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """:func:`augment` with this preset."""
        return augment(points, self, rng)


PROTOCOLS: dict[str, Protocol] = {
    "plain": Protocol("plain", scale=(0.9, 1.1), unit_sphere=True,
                      description="centre + unit sphere; per-axis scale U[0.9,1.1]"),
    "any2point_scan": Protocol("any2point_scan", scale=(0.9, 1.1), rotate_up=True,
                               description="Any2Point ScanObjectNN: per-axis scale U[0.9,1.1] + rotation about "
                                           "up; centring only"),
    "any2point_mn40": Protocol("any2point_mn40", scale=(2 / 3, 3 / 2), translate=0.2,
                               description="Any2Point ModelNet40: per-axis scale U[2/3,3/2] + translate U[-0.2,0.2]"),
    "none": Protocol("none", description="no augmentation; centring only"),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown data protocol {name!r}; choose one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


def centre(p: np.ndarray, unit_sphere: bool) -> np.ndarray:
    """Centre each cloud of ``p (B, N, 3)``; optionally scale it into the unit sphere."""
    p = p - p.mean(axis=1, keepdims=True)
    if unit_sphere:
        p = p / np.maximum(np.linalg.norm(p, axis=-1).max(axis=1), 1e-9)[:, None, None]
    return p


def augment(points: np.ndarray, proto: Protocol, rng: np.random.Generator) -> np.ndarray:
    """The preset's augmentation of already-sampled ``points (B, N, 3)``: centre (unit sphere if asked), per-axis
    scale, rotation about up, translation, jitter. Returns float32."""
    B = len(points)
    p = centre(points.astype(np.float64), proto.unit_sphere)
    if proto.scale:
        p = p * rng.uniform(*proto.scale, size=(B, 1, 3))
    if proto.rotate_up:
        t = rng.uniform(-np.pi, np.pi, B)
        c, s = np.cos(t), np.sin(t)
        x, z = p[..., 0].copy(), p[..., 2].copy()
        p[..., 0], p[..., 2] = c[:, None] * x + s[:, None] * z, -s[:, None] * x + c[:, None] * z
    if proto.translate:
        p = p + rng.uniform(-proto.translate, proto.translate, size=(B, 1, 3))
    if proto.jitter:
        p = p + np.clip(rng.normal(0, proto.jitter, p.shape), -5 * proto.jitter, 5 * proto.jitter)
    return p.astype(np.float32)


def fps_indices(points: np.ndarray, num_points: int, chunk: int = 256) -> np.ndarray:
    """Deterministic FPS indices ``(N, num_points)`` (int32) of ``points (N, P, 3)`` starting at point 0, in chunks
    of samples (:func:`peft3d.models.geometry.farthest_point_sample`)."""
    import torch  # lazily: grids validate protocol names without importing torch

    from peft3d.models.geometry import farthest_point_sample as fps

    out = [np.zeros((0, num_points), np.int32)]
    for i in range(0, len(points), chunk):
        x = torch.from_numpy(np.ascontiguousarray(points[i:i + chunk], dtype=np.float32))
        out.append(fps(x, num_points).numpy().astype(np.int32))
    return np.concatenate(out)


FPS_VERSION = "fps-start0-v3"  # bump when the FPS implementation changes, so old cache entries are not reused


def eval_points(points: np.ndarray, num_points: int, proto: Protocol, chunk: int = 256, *,
                cache_key: str | None = None, cache_dir: str | None = None) -> np.ndarray:
    """Deterministic FPS to ``num_points`` then centring: the fixed evaluation input.

    ``cache_key`` (e.g. ``data.cache_key("test")``) turns on the disk cache (``results/cache`` or
    ``$PEFT3D_CACHE``): the FPS indices are computed once and stored under a sha256 of the key, the array's
    content, ``num_points`` and the FPS version; a wrong key can therefore never serve another array's indices.
    The cache is protocol-independent (centring is applied after the lookup)."""
    from peft3d.datasets import cache

    if num_points > points.shape[1]:
        raise ConfigError(f"num_points={num_points} exceeds the {points.shape[1]} points stored per sample")
    if cache_key is None:
        idx = fps_indices(points, num_points, chunk)
    else:
        name = cache.entry_name("evalfps", cache_key, num_points, FPS_VERSION, cache_key, array_sha256(points),
                                num_points)
        idx = cache.cached(name,
                           lambda: fps_indices(points, num_points, chunk), cache_dir,
                           check=lambda a: a.shape == (len(points), num_points) and
                           (a.size == 0 or (a.min() >= 0 and a.max() < points.shape[1])))
    picked = np.take_along_axis(points, idx.astype(np.int64)[..., None], axis=1)
    return centre(picked, proto.unit_sphere).astype(np.float32)

