"""Data protocols: named presets of augmentation, point count and sampling (protocol.md).

Training batches: per sample a random subset of the stored points, then the preset's augmentation.
Evaluation: deterministic farthest point sampling to ``num_points`` (computed once per array), centred.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from peft3d.errors import ConfigError


@dataclass(frozen=True)
class Protocol:
    name: str
    scale: tuple[float, float] | None = None  # per-axis uniform scaling range
    rotate_up: bool = False  # random rotation about the up axis (y), U[-pi, pi]
    translate: float = 0.0  # per-axis uniform translation in [-t, t]
    jitter: float = 0.0  # Gaussian jitter sigma (clipped at 5 sigma)
    unit_sphere: bool = False  # rescale to the unit sphere after centring
    description: str = ""


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


def train_batch(points: np.ndarray, num_points: int, proto: Protocol, rng: np.random.Generator) -> np.ndarray:
    """``points (B, P, 3)`` -> augmented ``(B, num_points, 3)`` float32, vectorised over the batch."""
    B, P, _ = points.shape
    if num_points > P:
        raise ConfigError(f"num_points={num_points} exceeds the {P} points stored per sample")
    idx = np.argsort(rng.random((B, P)), axis=1)[:, :num_points]  # a random subset per sample
    p = np.take_along_axis(points, idx[..., None], axis=1).astype(np.float64)
    p = centre(p, proto.unit_sphere)
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


def eval_points(points: np.ndarray, num_points: int, proto: Protocol, chunk: int = 256) -> np.ndarray:
    """Deterministic FPS to ``num_points`` then centring: the fixed evaluation input."""
    import torch  # lazily: grids validate protocol names without importing torch

    from peft3d.models.geometry import farthest_point_sample, gather

    if num_points > points.shape[1]:
        raise ConfigError(f"num_points={num_points} exceeds the {points.shape[1]} points stored per sample")
    out = []
    for i in range(0, len(points), chunk):
        x = torch.from_numpy(np.ascontiguousarray(points[i:i + chunk], dtype=np.float32))
        out.append(gather(x, farthest_point_sample(x, num_points)).numpy())
    return centre(np.concatenate(out) if out else points[:, :num_points], proto.unit_sphere).astype(np.float32)
