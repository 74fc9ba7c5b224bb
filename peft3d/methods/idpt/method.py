"""IDPT (docs/point_peft.md): one instance-aware prompt token, made from the point tokens, enters before the last
block and leaves after it.

The generator (:class:`PromptGenerator`) lives at model level (``model.idpt_generator``): its BatchNorm
statistics change while it trains, and the backbone's own buffers must not. The last block is wrapped in
:class:`PromptedBlock`, which inserts the prompt right after the prefix tokens (``context.num_prefix``, not
"token 0") and removes it from the block's output, so the final norm and the shared head see the same tokens
as with every other method. Every other block is untouched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from peft3d.methods.base import Method

from .config import IDPTConfig

SLOPE = 0.2  # LeakyReLU negative slope of the released generator


def knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, G, C)`` -> ``(B, G, k)`` indices of each token's k nearest tokens in feature space (itself included)."""
    return torch.cdist(x, x).topk(k, dim=-1, largest=False).indices


def edge_features(x: torch.Tensor, k: int) -> torch.Tensor:
    """DGCNN's edge features ``[x_j - x_i, x_i]`` over the kNN graph: ``(B, G, C)`` -> ``(B, G, k, 2C)``."""
    B, G, C = x.shape
    idx = knn(x.detach(), k)
    neighbours = torch.gather(x.unsqueeze(1).expand(B, G, G, C), 2, idx.unsqueeze(-1).expand(-1, -1, -1, C))
    centre = x.unsqueeze(2).expand(-1, -1, k, -1)
    return torch.cat([neighbours - centre, centre], dim=-1)


class EdgeConv(nn.Module):
    """Linear (no bias) -> BatchNorm -> LeakyReLU on every edge, then the max over each token's neighbours."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * width, width, bias=False)
        self.norm = nn.BatchNorm1d(width)

    def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:  # (B, G, C) -> (B, G, C)
        e = self.linear(edge_features(x, k))  # (B, G, k, C)
        e = F.leaky_relu(self.norm(e.flatten(0, 2)).view_as(e), SLOPE)
        return e.amax(dim=2)


class PromptGenerator(nn.Module):
    """The point tokens ``(B, G, D)`` -> one prompt ``(B, 1, D)``: optional down-projection, ``edge_convs``
    EdgeConvs (each on the kNN graph of its own input), the concatenation of their outputs fused by Linear ->
    BatchNorm -> LeakyReLU, a max over tokens, optional up-projection, plus a learned position for the prompt."""

    def __init__(self, width: int, cfg: IDPTConfig) -> None:
        super().__init__()
        narrow = cfg.hidden is not None and cfg.hidden < width  # a bottleneck no narrower is no bottleneck
        inner = cfg.hidden if narrow else width
        self.down = nn.Linear(width, inner, bias=False) if narrow else nn.Identity()
        self.edges = nn.ModuleList(EdgeConv(inner) for _ in range(cfg.edge_convs))
        self.fuse = nn.Linear(cfg.edge_convs * inner, inner, bias=False)
        self.fuse_norm = nn.BatchNorm1d(inner)
        self.up = nn.Linear(inner, width, bias=False) if narrow else nn.Identity()
        self.position = nn.Parameter(torch.empty(1, 1, width))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.k = cfg.k

    def forward(self, points: torch.Tensor) -> torch.Tensor:  # (B, G, D) -> (B, 1, D)
        x = self.down(points)
        k = min(self.k, x.shape[1])
        outs = []
        for edge in self.edges:
            x = edge(x, k)
            outs.append(x)
        f = self.fuse(torch.cat(outs, dim=-1))  # (B, G, C)
        f = F.leaky_relu(self.fuse_norm(f.flatten(0, 1)).view_as(f), SLOPE)
        return self.up(f.amax(dim=1, keepdim=True)) + self.position


class PromptedBlock(nn.Module):
    """The last block, run on ``[prefix; prompt; points]``; returns ``[prefix; points]``."""

    def __init__(self, block: nn.Module, generator: PromptGenerator, context) -> None:
        super().__init__()
        self.block = block
        self._generator = [generator]  # owned by the model (model.idpt_generator)
        self._context = [context]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        ctx = self._context[0]
        n, G = ctx.num_prefix, ctx.centres.shape[1]
        prompt = self._generator[0](x[:, n:n + G])
        y = self.block(torch.cat([x[:, :n], prompt, x[:, n:]], dim=1))
        return torch.cat([y[:, :n], y[:, n + 1:]], dim=1)


class IDPT(Method):
    name, prefix, config_cls = "idpt", "idpt_", IDPTConfig

    def attach(self, model, cfg: IDPTConfig) -> None:
        bb = model.backbone
        model.idpt_generator = PromptGenerator(bb.spec.width, cfg)
        bb.blocks[-1] = PromptedBlock(bb.blocks[-1], model.idpt_generator, model.context)
