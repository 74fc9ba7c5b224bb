"""A frozen copy of the tokenizer's arithmetic before it was made channels-last, kept only to pin the fast
implementation against it: channels-first 1x1 convolutions through the modules' own ``forward``, FPS with a
per-pick distance update, kNN through exact ``cdist``. It runs on a current ``PointTokenizer``'s modules."""
from __future__ import annotations

import torch


def fps(xyz: torch.Tensor, n: int) -> torch.Tensor:
    B, N, _ = xyz.shape
    idx = torch.zeros(B, n, dtype=torch.long)
    dist = torch.full((B, N), float("inf"), dtype=xyz.dtype)
    far = torch.zeros(B, dtype=torch.long)
    batch = torch.arange(B)
    for i in range(n):
        idx[:, i] = far
        dist = torch.minimum(dist, ((xyz - xyz[batch, far].unsqueeze(1)) ** 2).sum(-1))
        far = dist.argmax(-1)
    return idx


def knn(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(query, points, compute_mode="donot_use_mm_for_euclid_dist")
    return d.topk(k, dim=-1, largest=False, sorted=True).indices


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    flat = idx.reshape(x.shape[0], -1)
    return torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, x.shape[-1])).reshape(*idx.shape, x.shape[-1])


def pos_encoding(xyz: torch.Tensor, width: int, alpha: float, beta: float) -> torch.Tensor:
    F = width // 6
    freq = alpha ** (torch.arange(F, dtype=xyz.dtype) / F)
    ang = beta * xyz.unsqueeze(-1) / freq
    pe = torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-3)
    return torch.nn.functional.pad(pe, (0, width - pe.shape[-1])) if pe.shape[-1] < width else pe


def stage_forward(stage, xyz: torch.Tensor, feat: torch.Tensor):
    cfg = stage.cfg
    c_idx = fps(xyz, xyz.shape[1] // 2)
    centres, c_feat = gather(xyz, c_idx), gather(feat, c_idx)
    nb_idx = knn(centres, xyz, cfg.k)
    nb_xyz, nb_feat = gather(xyz, nb_idx), gather(feat, nb_idx)
    rel = nb_xyz - centres.unsqueeze(2)
    if cfg.group_norm == "scan":
        rel = rel / rel.abs().amax(dim=2, keepdim=True).clamp_min(1e-5)
    else:
        rel = rel / rel.flatten(1).std(dim=1).clamp_min(1e-5).view(-1, 1, 1, 1)
    x = torch.cat([nb_feat, c_feat.unsqueeze(2).expand_as(nb_feat)], dim=-1)
    x = x + pos_encoding(rel, stage.c_out, cfg.alpha, cfg.beta)
    x = x.permute(0, 3, 1, 2)
    for blk in stage.blocks:
        x = torch.relu(blk.net(x) + x)
    return centres, x.amax(dim=-1).transpose(1, 2), nb_idx


def tokenizer_forward(tok, xyz: torch.Tensor):
    """-> tokens, centres, and each stage's neighbour indices."""
    feat = tok.raw(xyz.transpose(1, 2)).transpose(1, 2)
    centres, neighbours = xyz, []
    for stage in tok.stages:
        centres, feat, nb = stage_forward(stage, centres, feat)
        neighbours.append(nb)
    tokens = tok.proj(feat)
    if isinstance(tok.out_norm, torch.nn.BatchNorm1d):
        tokens = tok.out_norm(tokens.transpose(1, 2)).transpose(1, 2)
    return tokens, centres, neighbours
