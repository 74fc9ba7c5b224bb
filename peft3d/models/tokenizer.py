"""Point-PN style point tokenizer (any2point.md §1.1): raw embedding, then stages of FPS + kNN grouping,
geometric normalisation, feature expansion, non-learnable PosE, residual bottleneck blocks, max-pool.

At paper settings (1024 points, 3 stages, embed 96, lga (2,1,1), last bottleneck 32) the point network has
exactly 276,672 parameters and yields 128 tokens x 768 channels, as in the released code.

Speed: features stay channels-last ``(B, G, K, C)`` end to end, so every 1x1 convolution is one
matmul over contiguous rows and every BatchNorm reduces contiguous rows (no permutes, no strided conv
path). The modules keep the released layout (``Conv2d``/``BatchNorm2d``, same parameter names and shapes,
same initialisation); only the arithmetic is laid out differently. One squared-distance matrix per forward
serves FPS and kNN of every stage (a later stage's points are the earlier stage's centres: a sub-matrix).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from peft3d.core.spec import TokenizerCfg
from peft3d.models.geometry import farthest_point_sample, gather, knn_from_dist, pairwise_sq_dist, sub_matrix


def conv1x1(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 ``Conv1d``/``Conv2d`` applied to channels-last ``x (..., C_in)``: one matmul."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def batch_norm_rows(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """``bn`` (a BatchNorm1d/2d) over channels-last ``x (..., C)``: statistics per channel over every leading
    dimension, exactly what the module computes on the channels-first layout; running stats updated alike.
    ``relu``: applied in place *before* reshaping back (an in-place op on a view would make autograd copy the
    whole tensor in backward)."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    batch_stats = bn.training or bn.running_mean is None
    track = not bn.training or bn.track_running_stats
    out = F.batch_norm(x.reshape(-1, x.shape[-1]), bn.running_mean if track else None,
                       bn.running_var if track else None, bn.weight, bn.bias, batch_stats, momentum, bn.eps)
    return (torch.relu_(out) if relu else out).view(x.shape)


class Bottleneck(nn.Module):
    """Point-PN ``Linear2Layer``: 1x1 conv C->h + BN + ReLU, 1x1 conv h->C + BN, residual, ReLU."""

    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, c, 1), nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # channels-last (B, G, K, C)
        conv1, bn1, _, conv2, bn2 = self.net
        h = batch_norm_rows(bn1, conv1x1(conv1, x), relu=True)
        return torch.relu_(batch_norm_rows(bn2, conv1x1(conv2, h)) + x)


@torch.no_grad()
def pos_encoding(xyz: torch.Tensor, width: int, alpha: float, beta: float) -> torch.Tensor:
    """Point-NN PosE: sin/cos of beta*xyz / alpha**(i/F), F = width/6 -> ``(..., width)`` laid out as
    (axis, frequency, sin|cos). Not learnable and never differentiated (its input is geometry)."""
    F_ = width // 6
    inv = alpha ** (-torch.arange(F_, device=xyz.device, dtype=xyz.dtype) / F_)
    ang = (beta * xyz).unsqueeze(-1) / (1 / inv)  # (..., 3, F), the division of the reference formula
    pe = torch.empty(*ang.shape, 2, device=xyz.device, dtype=xyz.dtype)
    torch.sin(ang, out=pe[..., 0])
    torch.cos(ang, out=pe[..., 1])
    pe = pe.flatten(-3)
    if pe.shape[-1] < width:  # width not divisible by 6: pad with zeros (never at paper widths)
        pe = F.pad(pe, (0, width - pe.shape[-1]))
    return pe


class Stage(nn.Module):
    def __init__(self, c_in: int, n_blocks: int, hidden: int, cfg: TokenizerCfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.c_out = 2 * c_in
        self.blocks = nn.Sequential(*[Bottleneck(self.c_out, hidden) for _ in range(n_blocks)])

    def forward(self, xyz: torch.Tensor, feat: torch.Tensor, dist: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """xyz (B, N, 3), feat (B, N, C), dist (B, N, N) -> centres (B, N/2, 3), tokens (B, N/2, 2C) and
        the centres' distance matrix (B, N/2, N/2)."""
        with torch.no_grad():
            c_idx = farthest_point_sample(xyz, xyz.shape[1] // 2, dist=dist)  # (B, G)
            nb_idx = knn_from_dist(dist, c_idx, self.cfg.k)  # (B, G, K)
            centres = gather(xyz, c_idx)
            rel = gather(xyz, nb_idx) - centres.unsqueeze(2)  # (B, G, K, 3)
            if self.cfg.group_norm == "scan":  # per group and axis: divide by the max |offset|
                rel = rel / rel.abs().amax(dim=2, keepdim=True).clamp_min(1e-5)
            else:  # "std": one scalar per sample (the released code uses one per batch: batch-dependent)
                rel = rel / rel.flatten(1).std(dim=1).clamp_min(1e-5).view(-1, 1, 1, 1)
            pe = pos_encoding(rel, self.c_out, self.cfg.alpha, self.cfg.beta)
        nb_feat = gather(feat, nb_idx)  # (B, G, K, C)
        c_feat = gather(feat, c_idx).unsqueeze(2).expand_as(nb_feat)
        x = torch.cat([nb_feat, c_feat], dim=-1).add_(pe.to(feat.dtype))  # (B, G, K, 2C)
        x = self.blocks(x)
        # max, not amax: the same values, and a backward that scatters to the arg-max instead of building a
        # tie mask and counting it in int64 (amax's backward was the largest copy in the profile). On exact
        # ties the gradient goes to one neighbour instead of being split; ties happen at ReLU's zeros, whose
        # gradient is zero either way.
        return centres, x.max(dim=2).values, sub_matrix(dist, c_idx)


class PointTokenizer(nn.Module):
    """``xyz (B, N, 3)`` -> ``tokens (B, G, width)``, ``centres (B, G, 3)`` with G = N / 2**num_stages."""

    def __init__(self, cfg: TokenizerCfg, width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.raw = nn.Sequential(nn.Conv1d(3, cfg.embed_dim, 1, bias=False), nn.BatchNorm1d(cfg.embed_dim),
                                 nn.ReLU(inplace=True))
        stages, c = [], cfg.embed_dim
        for s, n_blocks in enumerate(cfg.lga_blocks):
            last = s == cfg.num_stages - 1
            hidden = cfg.last_bottleneck if last else c  # 2C / 2 = C in the inner stages
            stages.append(Stage(c, n_blocks, hidden, cfg))
            c *= 2
        self.stages = nn.ModuleList(stages)
        self.proj = nn.Identity() if c == width else nn.Linear(c, width)
        self.out_norm = {"batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm}.get(
            cfg.out_norm_name, lambda _: nn.Identity())(width)

    def forward(self, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if xyz.shape[1] % 2**self.cfg.num_stages:
            raise ValueError(f"{xyz.shape[1]} points is not divisible by 2**num_stages={2**self.cfg.num_stages}")
        xyz = xyz.float()  # geometry in fp32 even under autocast
        feat = batch_norm_rows(self.raw[1], conv1x1(self.raw[0], xyz), relu=True)  # (B, N, C0)
        centres = xyz
        with torch.no_grad():
            dist = pairwise_sq_dist(xyz)
        for stage in self.stages:
            centres, feat, dist = stage(centres, feat, dist)
        tokens = self.proj(feat)  # (B, G, D)
        if isinstance(self.out_norm, nn.BatchNorm1d):
            tokens = batch_norm_rows(self.out_norm, tokens)
        else:  # LayerNorm over channels, or identity
            tokens = self.out_norm(tokens)
        return tokens, centres
