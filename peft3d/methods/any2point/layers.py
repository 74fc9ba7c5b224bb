"""Any-to-3D guided adapter (any2point.md §3): the bottleneck adapter on each FFN output, and after each block
the M cell-restricted local attentions, cell pooling, the non-parametric 3D voxel branch and the adaptive
ensemble. Vectorised over samples, views, tokens, cells and voxels (scatter over compact group ids, one
batched masked attention over (B, M)).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from peft3d.methods.any2point.projection import Geometry, VirtualProjection


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _xavier_(t: torch.Tensor) -> None:
    """xavier-uniform per view slice ``t[m] (out, in)`` (what the released ``_init_weights`` gives each Linear)."""
    for m in range(t.shape[0]):
        nn.init.xavier_uniform_(t[m])


class BottleneckAdapter(nn.Module):
    """FFN-site hook (released ``AdapterSuper_noout``): ``scale * up(dropout(QuickGELU(down(f))))`` with ``f`` the
    FFN output (after layer scale), added to it as it joins the residual. Dropout is functional so that
    ``PointModel.train`` (which silences the frozen backbone's Dropout modules) leaves it on."""

    def __init__(self, width: int, cfg: Any) -> None:
        super().__init__()
        self.a2p_down = nn.Linear(width, cfg.bottleneck)
        self.a2p_up = nn.Linear(cfg.bottleneck, width)
        self.scale, self.p = cfg.scale, cfg.dropout
        for lin in (self.a2p_down, self.a2p_up):  # the released model re-inits every Linear: xavier, bias 0
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, ffn_in: torch.Tensor, ffn_out: torch.Tensor) -> torch.Tensor:
        h = F.dropout(quick_gelu(self.a2p_down(ffn_out)), self.p, self.training)
        return self.scale * self.a2p_up(h)


class LocalAttentions(nn.Module):
    """The M released ``Attention1`` + ``LayerNorm`` pairs (shared by all blocks), stacked over views:
    view m maps ``x -> x + proj_m(attn(LN_m(x)))`` with q, k, v of ``attn_dim`` channels in ``attn_heads`` heads,
    scale ``attn_dim ** -0.5``, and tokens attending only to tokens of their own cell in view m."""

    def __init__(self, views: int, width: int, cfg: Any) -> None:
        super().__init__()
        a = cfg.attn_dim
        self.heads, self.dim = cfg.attn_heads, a
        self.ln_weight = nn.Parameter(torch.ones(views, width))
        self.ln_bias = nn.Parameter(torch.zeros(views, width))
        self.qkv_weight = nn.Parameter(torch.empty(views, 3 * a, width))
        self.qkv_bias = nn.Parameter(torch.zeros(views, 3 * a))
        self.proj_weight = nn.Parameter(torch.empty(views, width, a))
        self.proj_bias = nn.Parameter(torch.zeros(views, width))
        _xavier_(self.qkv_weight.data)
        _xavier_(self.proj_weight.data)

    def forward(self, x: torch.Tensor, same_cell: torch.Tensor) -> torch.Tensor:
        """``x (B, N, D)``, ``same_cell (M, B, N, N)`` -> ``x + proj_m(attn)`` as ``(M, B*N, D)`` WITHOUT the
        output bias ``proj_bias[m]``: a constant per view, the caller adds it after pooling (cheaper)."""
        B, N, D = x.shape
        M, a, h = self.qkv_weight.shape[0], self.dim, self.heads
        # LN_m's affine folded into the q/k/v projection: one normalisation, one matmul for all views.
        w = self.qkv_weight * self.ln_weight.unsqueeze(1)  # (M, 3a, D)
        b = self.qkv_bias + torch.einsum("mkd,md->mk", self.qkv_weight, self.ln_bias)  # (M, 3a)
        qkv = F.linear(F.layer_norm(x, (D,)), w.reshape(M * 3 * a, D), b.reshape(-1))  # (B, N, M*3a)
        q, k, v = qkv.view(B, N, M, 3, h, a // h).permute(3, 2, 0, 4, 1, 5).reshape(3, M * B, h, N, a // h)
        mask = same_cell.reshape(M * B, 1, N, N)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=a ** -0.5)  # (M*B, h, N, a/h)
        o = o.transpose(1, 2).reshape(M, B * N, a)
        return torch.baddbmm(x.reshape(1, B * N, D), o, self.proj_weight.transpose(1, 2))  # (M, B*N, D)


class ViewBatchNorm(nn.Module):
    """M independent BatchNorm1d's (one per view) over rows tagged with their view, in one pass.

    ``rows[m]`` is the number of rows view m's statistics average over: its occupied cells, or (released
    ``bn_empty_cells``) every cell of the fixed cell grid, the empty ones being zero rows that add nothing to
    the sums but count in the mean and variance. Momentum 0.1, eps 1e-5, unbiased running variance, as
    ``nn.BatchNorm1d``."""

    def __init__(self, views: int, width: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(views, width))
        self.bias = nn.Parameter(torch.zeros(views, width))
        self.register_buffer("running_mean", torch.zeros(views, width))
        self.register_buffer("running_var", torch.ones(views, width))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, z: torch.Tensor, view: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        # z (R, D), view (R,) in [0, M), rows (M,) -> (R, D)
        if self.training:
            n = rows.clamp_min(1).unsqueeze(1)  # (M, 1)
            mean = torch.zeros_like(self.weight).index_add(0, view, z) / n  # (M, D)
            dev = z - mean.index_select(0, view)
            occupied = torch.bincount(view, minlength=n.shape[0]).to(z.dtype).unsqueeze(1)
            var = (torch.zeros_like(self.weight).index_add(0, view, dev * dev)
                   + (n - occupied) * mean * mean) / n  # empty rows are zeros: (0 - mean)^2 each
            with torch.no_grad():
                self.num_batches_tracked += 1
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / (n - 1).clamp_min(1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight * torch.rsqrt(var + self.eps)  # (M, D)
        shift = self.bias - mean * scale
        return z * scale.index_select(0, view) + shift.index_select(0, view)  # (index_select: cheap backward)


def pool(x: torch.Tensor, group: torch.Tensor, count: torch.Tensor, how: str) -> torch.Tensor:
    """``x (R, D)`` rows, ``group (R,)`` ids in ``[0, G)``, ``count (G,)`` -> ``(G, D)`` mean or max + mean."""
    G, D = count.shape[0], x.shape[1]
    mean = x.new_zeros(G, D).index_add(0, group, x) / count.unsqueeze(1)
    if how == "mean":
        return mean
    mx = x.new_zeros(G, D).scatter_reduce(0, group.unsqueeze(1).expand(-1, D), x, "amax", include_self=False)
    return mx + mean


def ensemble_weights(per_view: torch.Tensor, x3d: torch.Tensor) -> torch.Tensor:
    """Adaptive any-to-3D ensemble: ``w_m = (cos(Y_m, X3d) + 1) / 2`` normalised over views (linear, not
    softmax). ``per_view (M, ..., D)``, ``x3d (..., D)`` -> ``(M, ...)``, summing to 1 over M."""
    # cos = <Y, X> / max(|Y| |X|, eps), as F.cosine_similarity, without its full-size normalised copies
    dot = (per_view * x3d).sum(-1)
    norms = torch.linalg.vector_norm(per_view, dim=-1) * torch.linalg.vector_norm(x3d, dim=-1)
    w = (dot / norms.clamp_min(1e-8) + 1) / 2
    return w / w.sum(0, keepdim=True).clamp_min(1e-12)


class BlockBranches(nn.Module):
    """One block's own modules: BN + GELU after the 3D voxel pooling (``out_transform_3d``) and after each
    view's cell pooling (``out_transform_1d/2d``)."""

    def __init__(self, views: int, width: int) -> None:
        super().__init__()
        self.bn3d = ViewBatchNorm(1, width)
        self.bn_views = ViewBatchNorm(views, width)


class GuidedAggregation(nn.Module):
    """Model-level owner of everything the guided adapter adds outside the backbone (``model.a2p_guided``):
    the shared local attentions and each block's BatchNorms (kept out of the backbone so that the frozen
    backbone's buffers never change)."""

    def __init__(self, width: int, depth: int, cfg: Any, projection: VirtualProjection) -> None:
        super().__init__()
        self.local = LocalAttentions(cfg.views, width, cfg)
        self.blocks = nn.ModuleList(BlockBranches(cfg.views, width) for _ in range(depth))
        self.how, self.coef = cfg.pool, cfg.coef
        self._projection = [projection]

    def geometry(self, centres: torch.Tensor) -> Geometry:
        return self._projection[0].geometry(centres)

    def forward(self, x: torch.Tensor, g: Geometry, i: int) -> torch.Tensor:
        """``x (B, N, D)`` point tokens after block i -> the ensemble ``coef * Y (B, N, D)`` to add to them."""
        B, N, D = x.shape
        M = g.cell.shape[0]
        br = self.blocks[i]
        # Non-parametric 3D branch: voxel max + mean, BN + GELU, back to the tokens. Weights only.
        vox = pool(x.reshape(B * N, D), g.voxel.flatten(), g.voxel_count, "maxmean")
        zero = g.voxel.new_zeros(vox.shape[0])
        x3d = F.gelu(br.bn3d(vox, zero, g.voxel_count.new_full((1,), vox.shape[0])))
        x3d = x3d.index_select(0, g.voxel.flatten())  # (B*N, D)
        # M views: cell-restricted attention, cell pooling, BN + GELU per view, back to the tokens.
        local = self.local(x, g.same_cell)  # (M, B*N, D), output bias not yet added
        cells = pool(local.reshape(M * B * N, D), g.group.flatten(), g.group_count, self.how)  # (G, D)
        bias = self.local.proj_bias.index_select(0, g.group_view)
        cells = cells + (2 * bias if self.how == "maxmean" else bias)  # max / mean of (x + b) = max / mean(x) + b
        per_view = F.gelu(br.bn_views(cells, g.group_view, g.view_rows))
        per_view = per_view.index_select(0, g.group.flatten()).view(M, B * N, D)
        w = ensemble_weights(per_view, x3d)  # (M, B*N)
        return self.coef * (w.unsqueeze(-1) * per_view).sum(0).view(B, N, D)


class GuidedBlock(nn.Module):
    """Wraps ``backbone.blocks[i]``: runs the block, then adds the guided ensemble to the point tokens (those
    after ``context.num_prefix``; the cls token passes through). ``batch_attention`` reproduces the released
    CLIP code, whose blocks read (B, T, D) as (seq, batch, feat); ``injection`` (``pe_injection`` other than
    once) adds the encoding to the block's input first."""

    def __init__(self, block: nn.Module, index: int, guided: GuidedAggregation, context: Any,
                 batch_attention: bool, injection: Any = None) -> None:
        super().__init__()
        self.block = block
        self.index = index
        self.batch_attention = batch_attention
        self._guided = [guided]  # lists: owned by the model, not by the backbone
        self._context = [context]
        self._injection = [injection]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        if self._injection[0] is not None:
            x = self._injection[0].before_block(x, self.index)
        y = self.block(x.transpose(0, 1)).transpose(0, 1) if self.batch_attention else self.block(x)
        ctx, guided = self._context[0], self._guided[0]
        n = ctx.num_prefix
        pts = y[:, n:]
        g = guided.geometry(ctx.centres)
        if g.group.shape[-1] != pts.shape[1]:
            raise RuntimeError(f"any2point: {pts.shape[1]} point tokens but the geometry has {g.group.shape[-1]}")
        return torch.cat([y[:, :n], pts + guided(pts, g, self.index)], dim=1)
