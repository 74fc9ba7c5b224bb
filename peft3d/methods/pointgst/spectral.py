"""Graph-spectral bases over the patch centres, built once per forward pass and shared by every block.

- Global graph: every centre of a cloud, edge weights the inverse distance (scaled by the cloud's mean distance,
  which leaves the eigenvectors unchanged and keeps the matrix well conditioned); unnormalised Laplacian
  ``L = D - W``; ``torch.linalg.eigh`` in fp32 (under autocast too) gives ``U`` (eigenvectors as columns,
  ascending frequency), orthonormal.
- Local graphs: the centres sorted along a Morton (Z-order) curve, cut into consecutive runs of ``local_size``
  (a shorter last run when the count does not divide), one Laplacian basis per run.

Nothing here trains: the bases are computed without gradient from centres the tokenizer sampled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

BITS = 10  # Morton key: 10 bits per axis of the cloud's bounding cube (30-bit keys)


@dataclass
class Bases:
    glob: torch.Tensor  # (B, G, G)
    order: torch.Tensor  # (B, G): centre indices in Morton order
    inverse: torch.Tensor  # (B, G): where each centre sits in that order
    local_full: torch.Tensor | None  # (B, q, s, s): the q full runs of s centres
    local_rest: torch.Tensor | None  # (B, r, r): the last, shorter run (r = G mod s), if any


def laplacian_basis(p: torch.Tensor) -> torch.Tensor:
    """``(..., n, 3)`` centres -> ``(..., n, n)`` orthonormal Laplacian eigenvectors (columns), fp32."""
    p = p.float()
    n = p.shape[-2]
    d = torch.cdist(p, p, compute_mode="donot_use_mm_for_euclid_dist")  # exact zeros on the diagonal
    scale = (d.sum((-1, -2), keepdim=True) / max(n * (n - 1), 1)).clamp_min(torch.finfo(d.dtype).tiny)
    w = scale / torch.maximum(d, 1e-6 * scale)  # inverse distance; coincident centres get a large finite weight
    w = w.masked_fill(torch.eye(n, dtype=torch.bool, device=p.device), 0.0)
    return torch.linalg.eigh(torch.diag_embed(w.sum(-1)) - w).eigenvectors


def morton_order(p: torch.Tensor) -> torch.Tensor:
    """``(B, G, 3)`` -> ``(B, G)`` indices that sort each cloud's centres along a Z-order curve over its bounding
    cube (quantised to ``2**BITS`` cells per axis; ties keep their original order)."""
    lo = p.amin(1, keepdim=True)
    span = (p.amax(1, keepdim=True) - lo).amax(-1, keepdim=True).clamp_min(1e-12)
    q = ((p - lo) / span * (2**BITS - 1)).round().long()
    key = torch.zeros(p.shape[:2], dtype=torch.long, device=p.device)
    for bit in range(BITS):
        for axis in range(3):
            key |= ((q[..., axis] >> bit) & 1) << (3 * bit + axis)
    return torch.sort(key, dim=1, stable=True).indices


def build(centres: torch.Tensor, local_size: int) -> Bases:
    with torch.no_grad(), torch.autocast(centres.device.type, enabled=False):
        p = centres.detach().float()
        B, G, _ = p.shape
        order = morton_order(p)
        runs = torch.gather(p, 1, order.unsqueeze(-1).expand(-1, -1, 3))
        s = min(local_size, G)
        q, r = divmod(G, s)
        full = laplacian_basis(runs[:, :q * s].reshape(B, q, s, 3)) if q else None
        rest = laplacian_basis(runs[:, q * s:]) if r else None
        return Bases(laplacian_basis(p), order, torch.argsort(order, dim=1), full, rest)


def forward_transform(U: torch.Tensor, x: torch.Tensor, as_released: bool) -> torch.Tensor:
    """Graph Fourier transform ``U^T x``; ``as_released``: ``U x``, what the released code computes."""
    return U @ x if as_released else U.transpose(-1, -2) @ x


def inverse_transform(U: torch.Tensor, x: torch.Tensor, as_released: bool) -> torch.Tensor:
    return U.transpose(-1, -2) @ x if as_released else U @ x


def per_run(x: torch.Tensor, b: Bases, step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``step(U, z)`` to each local run of ``x (B, G, C)`` (tokens in centre order) and put the tokens
    back in their original order."""
    B, G, C = x.shape
    xs = torch.gather(x, 1, b.order.unsqueeze(-1).expand(-1, -1, C))
    parts = []
    if b.local_full is not None:
        q, s = b.local_full.shape[1:3]
        parts.append(step(b.local_full, xs[:, :q * s].reshape(B, q, s, C)).reshape(B, q * s, C))
    if b.local_rest is not None:
        parts.append(step(b.local_rest, xs[:, G - b.local_rest.shape[1]:]))
    ys = torch.cat(parts, dim=1)
    return torch.gather(ys, 1, b.inverse.unsqueeze(-1).expand(-1, -1, C))
