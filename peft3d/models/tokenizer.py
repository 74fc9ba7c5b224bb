"""Point-PN style point tokenizer (any2point.md §1.1): raw embedding, then stages of FPS + kNN grouping,
geometric normalisation, feature expansion, non-learnable PosE, residual bottleneck blocks, max-pool.

At paper settings (1024 points, 3 stages, embed 96, lga (2,1,1), last bottleneck 32) the point network has
exactly 276,672 parameters and yields 128 tokens x 768 channels, as in the released code.

Speed: features stay channels-last ``(B, G, K, C)`` end to end, so every 1x1 convolution is one matmul over
contiguous rows and every BatchNorm reduces contiguous rows (no permutes, no strided conv path). The modules
keep the released layout (``Conv2d``/``BatchNorm2d``, same parameter names and shapes, same initialisation);
only the arithmetic is laid out differently. On the CPU in float32 the per-neighbour MLP runs the fused rows of
:mod:`peft3d.models.fused` (the first convolution's gradient per point, not per point x neighbour; fewer passes
over the ``(B*G*K, C)`` tensors); in evaluation each BatchNorm folds into its convolution. FPS and kNN come from
:func:`peft3d.models.geometry.sample_and_group` (a compiled kernel where one runs, else one distance matrix per
forward shared by every stage).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from peft3d.core.spec import TokenizerCfg
from peft3d.models.fused import BatchNormRows, GroupedLinear, NormResidualPool
from peft3d.models.geometry import gather, gather_rows, sample_and_group


def conv1x1(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 ``Conv1d``/``Conv2d`` applied to channels-last ``x (..., C_in)``: one matmul."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def norm_mode(bn: nn.modules.batchnorm._BatchNorm) -> tuple[bool, torch.Tensor | None, torch.Tensor | None, float]:
    """What ``bn``'s forward does now, as ``nn.BatchNorm`` decides it: (batch statistics?, running mean, running
    var, momentum). In training, counts the batch (``num_batches_tracked``) as the module does."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    batch_stats = bn.training or bn.running_mean is None
    track = not bn.training or bn.track_running_stats
    return batch_stats, bn.running_mean if track else None, bn.running_var if track else None, momentum


def batch_norm_rows(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, relu: bool = False,
                    residual: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
    """``bn`` (a BatchNorm1d/2d) over channels-last ``x (..., C)``: statistics per channel over every leading
    dimension, exactly what the module computes on the channels-first layout; running stats updated alike.
    ``residual`` (same shape as ``x``) is added, then ``relu`` applied, in place *before* reshaping back (an
    in-place op on a view would make autograd copy the whole tensor in backward). ``shift``: a bias the caller
    left out of ``x`` (see :func:`absorbs_bias`). Training on the CPU in float32 runs
    :class:`~peft3d.models.fused.BatchNormRows` (same values, a cheaper backward)."""
    batch_stats, mean, var, momentum = norm_mode(bn)
    rows = x.reshape(-1, x.shape[-1])
    res = None if residual is None else residual.reshape(rows.shape)
    if batch_stats and bn.affine and fused_rows(rows):
        return BatchNormRows.apply(rows, res, bn.weight, bn.bias, shift, mean, var, momentum, bn.eps, relu
                                   ).view(x.shape)
    rows = rows if shift is None else rows + shift
    out = F.batch_norm(rows, mean, var, bn.weight, bn.bias, batch_stats, momentum, bn.eps)
    if res is not None:
        out = out + res
    return (torch.relu_(out) if relu else out).view(x.shape)


def fused_rows(x: torch.Tensor) -> bool:
    """Whether the hand-fused row functions (:mod:`peft3d.models.fused`) run: float32 on the CPU, where they
    were measured faster; CUDA (one fused kernel per stock operator already) and autocast dtypes keep the stock
    operators."""
    return x.device.type == "cpu" and x.dtype == torch.float32


def absorbs_bias(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> bool:
    """Whether the convolution before ``bn`` may skip its bias on ``x``: on the fused path with batch
    statistics, which cancel a per-channel constant; the bias then moves the running mean only (and its
    gradient is exactly zero, where autograd computes rounding noise)."""
    return fused_rows(x) and bn.affine and (bn.training or bn.running_mean is None)


def folded_conv_bn(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one affine map, for a BatchNorm that uses its running statistics
    (evaluation): one matmul instead of a matmul and a normalisation pass."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = -bn.running_mean if conv.bias is None else conv.bias - bn.running_mean
    bias = bias * scale + (0 if bn.bias is None else bn.bias)
    return conv.weight.flatten(1) * scale.unsqueeze(1), bias


def max_over_neighbours(y: torch.Tensor) -> torch.Tensor:
    """``y (B, G, K, C)`` -> ``(B, G, C)``. Under autograd ``max``, not ``amax``: the same values, and a backward
    that scatters to the arg-max instead of building a tie mask and counting it in int64. On exact ties the
    gradient goes to one neighbour instead of being split; ties happen at ReLU's zeros, whose gradient is zero
    either way. Without autograd ``amax`` (no indices: 20x cheaper on the CPU)."""
    return y.max(dim=2).values if torch.is_grad_enabled() else y.amax(dim=2)


class Bottleneck(nn.Module):
    """Point-PN ``Linear2Layer``: 1x1 conv C->h + BN + ReLU, 1x1 conv h->C + BN, residual, ReLU."""

    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, c, 1), nn.BatchNorm2d(c),
        )

    def folded(self) -> bool:
        """Both BatchNorms use their running statistics (evaluation): each folds into its convolution."""
        bn1, bn2 = self.net[1], self.net[4]
        return not (bn1.training or bn2.training) and bn1.track_running_stats and bn2.track_running_stats

    def first_linear(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias of the first 1x1 convolution for inputs like ``x``: its BatchNorm folded in when
        :meth:`folded`, no bias when the BatchNorm absorbs it (:func:`absorbs_bias`)."""
        conv1, bn1 = self.net[0], self.net[1]
        if self.folded():
            return folded_conv_bn(conv1, bn1)
        return conv1.weight.flatten(1), None if absorbs_bias(bn1, x) else conv1.bias

    def pools_fused(self, x: torch.Tensor) -> bool:
        """Whether ``forward(x, pool=True)`` runs :class:`~peft3d.models.fused.NormResidualPool`."""
        return not self.folded() and absorbs_bias(self.net[4], x)

    def forward(self, x: torch.Tensor, pool: bool = False, first: torch.Tensor | None = None,
                grouped: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """channels-last ``x (B, G, K, C)`` -> the same shape, or with ``pool`` its max over the K neighbours
        ``(B, G, C)``. ``first``: ``x`` through :meth:`first_linear` as rows ``(B*G*K, hidden)``, when the
        caller computed it (:class:`~peft3d.models.fused.GroupedLinear`); ``grouped``: ``(feat, nb, centre)``
        when ``x`` is the stage's grouped input and carries no gradient itself (see ``NormResidualPool``)."""
        conv1, bn1, _, conv2, bn2 = self.net
        rows = x.reshape(-1, x.shape[-1])
        a1 = F.linear(rows, *self.first_linear(rows)) if first is None else first
        if self.folded():
            z = F.linear(torch.relu_(a1), *folded_conv_bn(conv2, bn2)).add_(rows).relu_().view(x.shape)
            return max_over_neighbours(z) if pool else z
        h = batch_norm_rows(bn1, a1, relu=True, shift=conv1.bias if absorbs_bias(bn1, a1) else None)
        absorbs = absorbs_bias(bn2, h)
        a2 = F.linear(h, conv2.weight.flatten(1), None if absorbs else conv2.bias)
        if pool and absorbs:
            _, mean, var, momentum = norm_mode(bn2)
            return NormResidualPool.apply(a2, x, *(grouped or (None, None, None)), bn2.weight, bn2.bias,
                                          conv2.bias, mean, var, momentum, bn2.eps)
        y = batch_norm_rows(bn2, a2, relu=True, residual=rows, shift=conv2.bias if absorbs else None)
        y = y.view(x.shape)
        return max_over_neighbours(y) if pool else y


@torch.no_grad()
def pos_encoding(xyz: torch.Tensor, width: int, alpha: float, beta: float) -> torch.Tensor:
    """Point-NN PosE: sin/cos of beta*xyz / alpha**(i/F), F = width/6 -> ``(..., width)`` laid out as
    (axis, frequency, sin|cos). Not learnable and never differentiated (its input is geometry)."""
    F_ = width // 6
    inv = alpha ** (-torch.arange(F_, device=xyz.device, dtype=xyz.dtype) / F_)
    ang = (beta * xyz).unsqueeze(-1) / (1 / inv)  # (..., 3, F), the division of the reference formula
    # a tensor of its own, not a view: the fused tokenizer path writes the grouped features into it
    pe = torch.zeros(*xyz.shape[:-1], width, device=xyz.device, dtype=xyz.dtype) if width > 6 * F_ else \
        torch.empty(*xyz.shape[:-1], width, device=xyz.device, dtype=xyz.dtype)
    # width not divisible by 6: the last channels stay zero (never at paper widths)
    sincos = pe[..., :6 * F_].view(*ang.shape, 2)
    torch.sin(ang, out=sincos[..., 0])
    torch.cos(ang, out=sincos[..., 1])
    return pe


class Stage(nn.Module):
    def __init__(self, c_in: int, n_blocks: int, hidden: int, cfg: TokenizerCfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.c_out = 2 * c_in
        self.blocks = nn.Sequential(*[Bottleneck(self.c_out, hidden) for _ in range(n_blocks)])

    def forward(self, xyz: torch.Tensor, feat: torch.Tensor, dist: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """xyz (B, N, 3), feat (B, N, C), dist (B, N, N) or None -> centres (B, N/2, 3), tokens (B, N/2, 2C)
        and the centres' distance matrix (B, N/2, N/2) or None (:func:`~peft3d.models.geometry.sample_and_group`)."""
        with torch.no_grad():
            c_idx, nb_idx, next_dist = sample_and_group(xyz, xyz.shape[1] // 2, self.cfg.k, dist)  # (B,G), (B,G,K)
            centres = gather(xyz, c_idx)
            rel = gather(xyz, nb_idx) - centres.unsqueeze(2)  # (B, G, K, 3)
            if self.cfg.group_norm == "scan":  # per group and axis: divide by the max |offset|
                rel = rel / rel.abs().amax(dim=2, keepdim=True).clamp_min(1e-5)
            else:  # "std": one scalar per sample (the released code uses one per batch: batch-dependent)
                rel = rel / rel.flatten(1).std(dim=1).clamp_min(1e-5).view(-1, 1, 1, 1)
            pe = pos_encoding(rel, self.c_out, self.cfg.alpha, self.cfg.beta)
        x, first, grouped = self.group(feat, pe, nb_idx, c_idx)  # (B, G, K, 2C), (B*G*K, hidden) or None
        if not len(self.blocks):
            return centres, max_over_neighbours(x), next_dist
        for i, block in enumerate(self.blocks):
            x = block(x, pool=i == len(self.blocks) - 1, first=first if i == 0 else None, grouped=grouped)
        return centres, x, next_dist

    def group(self, feat: torch.Tensor, pe: torch.Tensor, nb_idx: torch.Tensor, c_idx: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor | None, tuple | None]:
        """The grouped input ``[f_neighbour, f_centre] + PosE (B, G, K, 2C)``; on the fused path also the first
        block's first convolution of it (computed inside :class:`~peft3d.models.fused.GroupedLinear`) and, for
        a one-block stage, the ``(feat, nb, centre)`` through which the pool returns the residual's gradient."""
        if not (len(self.blocks) and fused_rows(feat)):
            nb_feat = gather_rows(feat, nb_idx)  # (B, G, K, C)
            c_feat = gather_rows(feat, c_idx).unsqueeze(2).expand_as(nb_feat)
            return torch.cat([nb_feat, c_feat], dim=-1).add_(pe.to(feat.dtype)), None, None
        B, N, _ = feat.shape
        offset = torch.arange(B, device=feat.device).mul_(N)
        nb = (nb_idx + offset.view(B, 1, 1)).reshape(-1)
        centre = (c_idx + offset.view(B, 1)).reshape(-1)
        routed = len(self.blocks) == 1 and self.blocks[0].pools_fused(feat) and torch.is_grad_enabled()
        x, first = GroupedLinear.apply(feat, pe, nb, centre, *self.blocks[0].first_linear(feat), not routed)
        return x, first, (feat, nb, centre) if routed else None


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
        centres, dist = xyz, None
        for stage in self.stages:
            centres, feat, dist = stage(centres, feat, dist)
        tokens = self.proj(feat)  # (B, G, D)
        if isinstance(self.out_norm, nn.BatchNorm1d):
            tokens = batch_norm_rows(self.out_norm, tokens)
        else:  # LayerNorm over channels, or identity
            tokens = self.out_norm(tokens)
        return tokens, centres
