"""Farthest point sampling and k-nearest neighbours, vectorised over the batch."""
from __future__ import annotations

import torch


def farthest_point_sample(xyz: torch.Tensor, n: int) -> torch.Tensor:
    """Indices ``(B, n)`` of ``n`` farthest points of ``xyz (B, N, 3)``, starting at point 0.

    Deterministic (pointnet2_ops also starts at index 0). The loop runs over the ``n`` picks, which is
    inherent to FPS; every step is vectorised over the batch.
    """
    B, N, _ = xyz.shape
    if n > N:
        raise ValueError(f"cannot sample {n} points from {N}")
    idx = torch.zeros(B, n, dtype=torch.long, device=xyz.device)
    dist = torch.full((B, N), float("inf"), device=xyz.device, dtype=xyz.dtype)
    far = torch.zeros(B, dtype=torch.long, device=xyz.device)
    batch = torch.arange(B, device=xyz.device)
    for i in range(n):
        idx[:, i] = far
        centre = xyz[batch, far].unsqueeze(1)  # (B, 1, 3)
        dist = torch.minimum(dist, ((xyz - centre) ** 2).sum(-1))
        far = dist.argmax(-1)
    return idx


def knn(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, M, k)`` of the ``k`` nearest ``points (B, N, 3)`` to each ``query (B, M, 3)``,
    nearest first (squared Euclidean distance)."""
    if k > points.shape[1]:
        raise ValueError(f"k={k} neighbours requested but only {points.shape[1]} points")
    d = torch.cdist(query, points, compute_mode="donot_use_mm_for_euclid_dist")  # exact, (B, M, N)
    return d.topk(k, dim=-1, largest=False, sorted=True).indices


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x (B, N, C)`` indexed by ``idx (B, ...)`` -> ``(B, ..., C)``."""
    B = x.shape[0]
    flat = idx.reshape(B, -1)
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return out.reshape(*idx.shape, x.shape[-1])
