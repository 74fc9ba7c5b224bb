"""Point-PN style point tokenizer (any2point.md §1.1): raw embedding, then stages of FPS + kNN grouping,
geometric normalisation, feature expansion, non-learnable PosE, residual bottleneck blocks, max-pool.

At paper settings (1024 points, 3 stages, embed 96, lga (2,1,1), last bottleneck 32) the point network has
exactly 276,672 parameters and yields 128 tokens x 768 channels, as in the released code.
"""
from __future__ import annotations

import torch
from torch import nn

from peft3d.core.spec import TokenizerCfg
from peft3d.models.geometry import farthest_point_sample, gather, knn


class Bottleneck(nn.Module):
    """Point-PN ``Linear2Layer``: 1x1 conv C->h + BN + ReLU, 1x1 conv h->C + BN, residual, ReLU."""

    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, c, 1), nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, G, K)
        return torch.relu(self.net(x) + x)


def pos_encoding(xyz: torch.Tensor, width: int, alpha: float, beta: float) -> torch.Tensor:
    """Point-NN PosE: sin/cos of beta*xyz / alpha**(i/F), F = width/6 -> ``(..., width)``."""
    F = width // 6
    freq = alpha ** (torch.arange(F, device=xyz.device, dtype=xyz.dtype) / F)
    ang = beta * xyz.unsqueeze(-1) / freq  # (..., 3, F)
    pe = torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-3)  # (..., 3*F*2)
    if pe.shape[-1] < width:  # width not divisible by 6: pad with zeros (never at paper widths)
        pe = torch.nn.functional.pad(pe, (0, width - pe.shape[-1]))
    return pe


class Stage(nn.Module):
    def __init__(self, c_in: int, n_blocks: int, hidden: int, cfg: TokenizerCfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.c_out = 2 * c_in
        self.blocks = nn.Sequential(*[Bottleneck(self.c_out, hidden) for _ in range(n_blocks)])

    def forward(self, xyz: torch.Tensor, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # xyz (B, N, 3), feat (B, N, C) -> centres (B, N/2, 3), tokens (B, N/2, 2C)
        n_out = xyz.shape[1] // 2
        c_idx = farthest_point_sample(xyz, n_out)  # (B, G)
        centres, c_feat = gather(xyz, c_idx), gather(feat, c_idx)
        nb_idx = knn(centres, xyz, self.cfg.k)  # (B, G, K)
        nb_xyz, nb_feat = gather(xyz, nb_idx), gather(feat, nb_idx)  # (B, G, K, 3), (B, G, K, C)
        rel = nb_xyz - centres.unsqueeze(2)
        if self.cfg.group_norm == "scan":  # per group and axis: divide by the max |offset|
            rel = rel / rel.abs().amax(dim=2, keepdim=True).clamp_min(1e-5)
        else:  # "std": one scalar per sample (the released code uses one per batch: batch-dependent)
            rel = rel / rel.flatten(1).std(dim=1).clamp_min(1e-5).view(-1, 1, 1, 1)
        x = torch.cat([nb_feat, c_feat.unsqueeze(2).expand_as(nb_feat)], dim=-1)  # (B, G, K, 2C)
        x = x + pos_encoding(rel, self.c_out, self.cfg.alpha, self.cfg.beta)
        x = self.blocks(x.permute(0, 3, 1, 2))  # (B, 2C, G, K)
        return centres, x.amax(dim=-1).transpose(1, 2)  # (B, G, 2C)


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
        feat = self.raw(xyz.transpose(1, 2)).transpose(1, 2)  # (B, N, C0)
        centres = xyz
        for stage in self.stages:
            centres, feat = stage(centres, feat)
        tokens = self.proj(feat)  # (B, G, D)
        if isinstance(self.out_norm, nn.BatchNorm1d):
            tokens = self.out_norm(tokens.transpose(1, 2)).transpose(1, 2)
        else:  # LayerNorm over channels, or identity
            tokens = self.out_norm(tokens)
        return tokens, centres
