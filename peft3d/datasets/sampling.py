"""Training-time point sampling fast enough to keep a GPU fed.

FPS is inherently sequential over the picks (1229 of 2048 points is 1229 dependent steps), so on a CPU its
cost is about ``picks × stored points`` distance updates per sample. FPS itself is
:func:`peft3d.models.geometry.farthest_point_sample` (the one implementation; ``device="cuda"`` runs it there).
The remedy here:

* :class:`TrainSampler` — precomputes, once per training set, the FPS candidate sets from ``starts`` random
  start points per sample (cached on disk, keyed by content like the evaluation cache); a training batch then
  costs a gather: a random one of the sample's candidate sets, a random ``num_points`` of it, the augmentation.
  Same distribution as FPS from a random start on every batch, restricted to ``starts`` start points.
"""
from __future__ import annotations

import numpy as np

FPS_BANK_VERSION = "fps-bank-v2"  # v2: one FPS (geometry.py), exact differences


def fps_candidates(points: np.ndarray, m: int, starts: int, seed: int = 0, chunk: int = 256,
                   device: str = "cpu") -> np.ndarray:
    """``(N, starts, m)`` indices: for each sample, FPS to ``m`` points from ``starts`` seeded random starts.
    ``device="cuda"`` runs the FPS there (same indices up to float ties; much faster)."""
    import torch

    from peft3d.models.geometry import farthest_point_sample

    N, P, _ = points.shape
    rng = np.random.default_rng(seed)
    first = rng.integers(0, P, size=(N, starts))
    dtype = np.int16 if P <= np.iinfo(np.int16).max else np.int32
    out = np.empty((N, starts, m), dtype)
    for i in range(0, N, chunk):
        x = torch.from_numpy(np.ascontiguousarray(points[i:i + chunk], np.float32)).to(device)
        b = len(x)
        x = x.repeat_interleave(starts, 0)  # (b * starts, P, 3)
        st = torch.from_numpy(first[i:i + b].reshape(-1))
        out[i:i + b] = farthest_point_sample(x, m, st).cpu().numpy().reshape(b, starts, m).astype(dtype)
    return out


class TrainSampler:
    """Training batches from precomputed FPS candidates::

        sampler = TrainSampler(data.train.points, 1024, cache_key=data.cache_key("train"))
        x = sampler.batch(idx, proto, rng)   # augmented (len(idx), num_points, 3)

    ``starts`` FPS runs of ``ceil(oversample * num_points)`` points per sample are computed once (on disk under
    ``results/cache`` or ``$PEFT3D_CACHE`` when ``cache_key`` is given; keyed by the array's content, not by
    ``device``). One-off cost on a CPU core ≈ N × starts / 150 s (PB-T50-RS, 8 starts: minutes; pass
    ``device="cuda"`` when there is one)."""

    def __init__(self, points: np.ndarray, num_points: int, starts: int = 8, oversample: float = 1.2,
                 seed: int = 0, cache_key: str | None = None, cache_dir: str | None = None,
                 device: str = "cpu") -> None:
        from peft3d.core.digest import array_sha256
        from peft3d.core.errors import ConfigError
        from peft3d.datasets import cache

        N, P, _ = points.shape
        if num_points > P:
            raise ConfigError(f"num_points={num_points} exceeds the {P} points stored per sample")
        self.points, self.num_points = points, num_points
        m = min(P, int(np.ceil(oversample * num_points)))

        def compute() -> np.ndarray:
            return fps_candidates(points, m, starts, seed, device=device)

        if cache_key is None:
            self.candidates = compute()
        else:
            name = cache.entry_name("trainfps", cache_key, f"{m}x{starts}", FPS_BANK_VERSION, cache_key,
                                    array_sha256(points), m, starts, seed)
            self.candidates = cache.cached(
                name, compute, cache_dir,
                check=lambda a: a.shape == (N, starts, m) and (a.size == 0 or (a.min() >= 0 and a.max() < P)))

    def batch(self, idx: np.ndarray, proto, rng: np.random.Generator) -> np.ndarray:
        """Augmented ``(len(idx), num_points, 3)`` float32 for the training samples ``idx`` (``proto``: a
        :class:`peft3d.datasets.protocols.Protocol`; its ``augment`` is called, so this module imports no
        protocol code and the two never import each other)."""
        B = len(idx)
        cand = self.candidates[idx, rng.integers(0, self.candidates.shape[1], B)]  # (B, m)
        keep = np.argsort(rng.random(cand.shape), axis=1)[:, :self.num_points]
        sel = np.take_along_axis(cand, keep, axis=1).astype(np.int64)
        p = np.take_along_axis(self.points[idx], sel[..., None], axis=1)
        return proto.augment(p, rng)
