"""PointGST (docs/point_peft.md): a Point Cloud Spectral Adapter at every block's FFN site.

``h = down(ffn_in)``; the point tokens of ``h`` (those after ``context.num_prefix``, one per centre) go to the
spectral domain of the global graph and of their local graph, get ``z + SiLU(W LayerNorm(z))`` there (``W``
zero-initialised, one per block, shared by the two branches as released), and come back; the adapter returns
``up(SiLU(h) + global + local)`` on the point tokens and ``up(SiLU(h))`` on the others, ``up`` zero-initialised.
The bases are built once per forward from ``context.centres`` and cached in ``context.cache``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from peft3d.methods.base import Method

from . import spectral
from .config import PointGSTConfig

CACHE_KEY = "gst_bases"


class SpectralAdapter(nn.Module):
    def __init__(self, width: int, cfg: PointGSTConfig, context) -> None:
        super().__init__()
        self.gst_down = nn.Linear(width, cfg.rank)
        self.gst_up = nn.Linear(cfg.rank, width)
        self.gst_transform = nn.Linear(cfg.rank, cfg.rank)  # in the spectral domain, shared by both graphs
        self.gst_norm_global = nn.LayerNorm(cfg.rank)
        self.gst_norm_local = nn.LayerNorm(cfg.rank)
        nn.init.xavier_uniform_(self.gst_down.weight)  # the released init
        for lin in (self.gst_up, self.gst_transform):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.local_size, self.as_released = cfg.local_size, cfg.as_released
        self._context = [context]

    def spectral_step(self, norm: nn.LayerNorm, U: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """To the spectral domain of ``U``, ``s + SiLU(W norm(s))``, and back: the identity while W is zero.
        In fp32 under autocast too (a bf16 round trip through ``U`` would be off by ~1%, not the identity)."""
        with torch.autocast(z.device.type, enabled=False):
            s = spectral.forward_transform(U, z.float(), self.as_released)
            s = s + F.silu(self.gst_transform(norm(s)))
            return spectral.inverse_transform(U, s, self.as_released).to(z.dtype)

    def bases(self) -> spectral.Bases:
        ctx = self._context[0]
        key = (CACHE_KEY, self.local_size)
        if key not in ctx.cache:
            ctx.cache[key] = spectral.build(ctx.centres, self.local_size)
        return ctx.cache[key]

    def forward(self, ffn_in: torch.Tensor, ffn_out: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        ctx = self._context[0]
        n, G = ctx.num_prefix, ctx.centres.shape[1]
        if ffn_in.shape[1] < n + G:
            raise RuntimeError(f"pointgst: {ffn_in.shape[1]} tokens reach the block but the context has {n} prefix "
                               f"tokens and {G} centres")
        h = self.gst_down(ffn_in)
        points, b = h[:, n:n + G], self.bases()
        glob = self.spectral_step(self.gst_norm_global, b.glob, points)
        loc = spectral.per_run(points, b, lambda U, z: self.spectral_step(self.gst_norm_local, U, z))
        a = F.silu(h)
        return self.gst_up(torch.cat([a[:, :n], a[:, n:n + G] + glob + loc, a[:, n + G:]], dim=1))


class PointGST(Method):
    name, prefix, config_cls = "pointgst", "gst_", PointGSTConfig

    def attach(self, model, cfg: PointGSTConfig) -> None:
        bb = model.backbone
        for i in range(len(bb.blocks)):
            bb.ffn_site(i).add_hook(SpectralAdapter(bb.spec.width, cfg, model.context))
