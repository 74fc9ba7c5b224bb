"""Forward/backward pairs for the tokenizer's per-neighbour MLP on channels-last rows, written to touch each
large ``(B*G*K, C)`` tensor as few times as possible on the CPU.

Why by hand: on one CPU thread at the quickstart settings the per-neighbour MLP is bound by memory traffic, not
arithmetic, and the stock operators pay for generality there. Measured (torch 2.14, 16,384 x 96 floats, one
thread): ``native_batch_norm_backward`` on channels-last rows 3.7 ms against 1.1 ms for two column sums and two
``addcmul``; ``max(dim=2)`` with indices 4.1 ms against 0.3 ms for a channels-last ``max_pool2d``; ``gather``
with a channel-expanded index 2.5 ms against 0.12 ms for ``index_select`` of rows; an in-place op on a view of
an autograd output costs a zero-filled copy of the whole tensor in backward. ``torch.compile`` of the same
blocks was measured and was slower here (docs/results-cpu.md). No library ships these fusions for the CPU.

Three pieces, composed by autograd (``peft3d.models.tokenizer``):

* :class:`GroupedLinear` — builds a stage's grouped input ``x = [f_j, f_i] + PosE`` (neighbour j of centre i)
  and its first 1x1 convolution. A linear map commutes with the gather, so the gradient reaching the point
  features is computed once per point (``N`` rows) instead of once per point x neighbour (``G*K`` rows).
* :class:`BatchNormRows` — training-mode BatchNorm (+ residual, + ReLU) with a two-column-sum backward.
* :class:`NormResidualPool` — a stage's last BatchNorm, the residual, the ReLU and the max over the K
  neighbours. Only one neighbour per (group, channel) receives a gradient, so the BatchNorm's column sums in
  backward are read at those positions only.

Each computes what autograd computes for the composed modules (the same formulas, summed in another order):
``tests/test_speed.py`` checks them with ``torch.autograd.gradcheck`` in float64 and against the reference
tokenizer in float32. The tokenizer uses them on the CPU in float32 only; CUDA and autocast dtypes keep the
stock operators (one fused kernel each there already).
"""
from __future__ import annotations

import torch
from torch.autograd import Function


def norm_backward(dz_sum: torch.Tensor, dz_x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor,
                  invstd: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training BatchNorm backward from two column sums: ``dz_sum = sum(dz)``, ``dz_x = sum(dz * x)``.

    ``dx = scale * (dz - mean(dz) - xhat * mean(dz * xhat))`` is ``dz * scale + x * k2 + k1``; returns
    ``scale, k2, k1, dweight`` (``dbias`` is ``dz_sum``)."""
    centred = dz_x - mean * dz_sum  # sum of dz * (x - mean)
    scale = weight * invstd
    k2 = scale * invstd.square() * centred / -n
    k1 = scale * dz_sum / -n - mean * k2
    return scale, k2, k1, centred * invstd


def shift_running_mean(running_mean: torch.Tensor | None, shift: torch.Tensor | None, momentum: float) -> None:
    """A bias added before a training-mode BatchNorm changes nothing but the running mean (the batch mean
    absorbs it): add it there, as if the batch had carried it. Its gradient is exactly zero."""
    if running_mean is not None and shift is not None:
        running_mean.add_(shift.detach(), alpha=momentum)


def zero_grad_of(shift: torch.Tensor | None, needed: bool) -> torch.Tensor | None:
    return torch.zeros_like(shift) if needed and shift is not None else None


class BatchNormRows(Function):
    """Training-mode BatchNorm of ``x + shift`` over the rows of ``x (R, C)`` (statistics per column), plus
    ``residual`` when given, then ReLU when ``relu``; running statistics updated in place exactly as
    ``F.batch_norm`` does. ``shift``: the preceding convolution's bias, which the batch statistics cancel (the
    convolution then skips its bias copy). The residual and the ReLU live inside so that no in-place op runs
    on a view of an autograd output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                shift: torch.Tensor | None, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                momentum: float, eps: float, relu: bool) -> torch.Tensor:
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        shift_running_mean(running_mean, shift, momentum)
        if residual is not None:
            y.add_(residual)
        if relu:
            y.relu_()
        ctx.relu = relu
        ctx.save_for_backward(x, y if relu else None, weight, mean, invstd, shift)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, y, weight, mean, invstd, shift = ctx.saved_tensors
        dz = torch.ops.aten.threshold_backward(dy, y, 0) if ctx.relu else dy
        dz_sum = dz.sum(0)
        scale, k2, k1, dweight = norm_backward(dz_sum, torch.mul(dz, x).sum(0), weight, mean, invstd, x.shape[0])
        need = ctx.needs_input_grad
        dx = torch.addcmul(k1, x, k2).addcmul_(dz, scale) if need[0] else None
        return (dx, dz if need[1] else None, dweight if need[2] else None, dz_sum if need[3] else None,
                zero_grad_of(shift, need[4]), None, None, None, None, None)


class NormResidualPool(Function):
    """``relu(BN(a + shift) + residual)`` max-pooled over the K neighbours: ``a (R, C)`` with ``R = B*G*K``
    rows, ``residual (B, G, K, C)`` -> ``(B, G, C)``. Training-mode BatchNorm, running statistics updated.

    The pool reads the sum as a channels-last ``(B*G, C, K, 1)`` image through ``max_pool2d`` (a vectorised
    kernel that keeps its arg-max). Ties go to the first neighbour, as ``max``; nothing flows where the maximum
    is <= 0 (the ReLU). When the residual is a stage's grouped input ``[feat[nb], feat[centre]] + PosE`` (one
    block per stage), passing ``feat, nb, centre`` sends its gradient straight to ``feat``: one value per
    (group, channel), instead of a dense zero-filled ``(R, C)`` gradient gathered back per point."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, residual: torch.Tensor, feat: torch.Tensor | None, nb: torch.Tensor | None,
                centre: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor, shift: torch.Tensor | None,
                running_mean: torch.Tensor | None, running_var: torch.Tensor | None, momentum: float,
                eps: float) -> torch.Tensor:
        B, G, K, C = residual.shape
        y, mean, invstd = torch.native_batch_norm(a, weight, bias, running_mean, running_var, True, momentum, eps)
        shift_running_mean(running_mean, shift, momentum)
        image = y.add_(residual.reshape(a.shape)).view(B * G, K, 1, C).permute(0, 3, 1, 2)
        top, arg = torch.ops.aten.max_pool2d_with_indices(image, [K, 1], [K, 1])
        row = torch.arange(B * G, device=a.device).mul_(K).view(-1, 1) + arg.view(B * G, C)  # (b*G + g)*K + k
        at = row * C + torch.arange(C, device=a.device)  # flat position of each maximum in ``a``
        ctx.save_for_backward(a, top.view(B * G, C), at, weight, mean, invstd, shift,
                              None if feat is None else _feature_positions(row, nb, centre, feat.shape[-1]))
        ctx.shape, ctx.feat_shape = residual.shape, None if feat is None else feat.shape
        return top.view(B, G, C).clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, top, at, weight, mean, invstd, shift, feat_at = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(grad.reshape(top.shape), top, 0)  # the ReLU
        # dz is g at the arg-max positions and 0 elsewhere: its column sums need those positions only
        g_sum = g.sum(0)
        at_max = a.view(-1).index_select(0, at.view(-1)).view(at.shape)
        scale, k2, k1, dweight = norm_backward(g_sum, (g * at_max).sum(0), weight, mean, invstd, a.shape[0])
        need = ctx.needs_input_grad
        da = dres = dfeat = None
        if need[0]:
            da = torch.addcmul(k1, a, k2)
            da.view(-1).index_add_(0, at.view(-1), (g * scale).view(-1))
        if need[1] and ctx.feat_shape is None:
            dres = torch.zeros(ctx.shape, dtype=g.dtype, device=g.device)
            dres.view(-1).index_copy_(0, at.view(-1), g.view(-1))  # each position holds one maximum
        if need[2]:
            dfeat = g.new_zeros(ctx.feat_shape).view(-1).index_add_(0, feat_at.view(-1), g.view(-1))
            dfeat = dfeat.view(ctx.feat_shape)
        return (da, dres, dfeat, None, None, dweight if need[5] else None, g_sum if need[6] else None,
                zero_grad_of(shift, need[7]), None, None, None, None)


def _feature_positions(row: torch.Tensor, nb: torch.Tensor, centre: torch.Tensor, C: int) -> torch.Tensor:
    """Flat positions in ``feat (B*N, C)`` of the grouped input's entries at ``row (B*G, 2C)``: channel c < C
    of row r is ``feat[nb[r], c]``, channel C + c is ``feat[centre[r // K], c]``."""
    c = torch.arange(C, device=row.device)
    return torch.cat([nb[row[:, :C]] * C + c, centre.view(-1, 1) * C + c], dim=1)


class GroupedLinear(Function):
    """``x = [feat[nb], feat[centre]] + pe`` ``(B, G, K, 2C)`` and ``a = x @ weight.T + bias`` ``(B*G*K, H)``.

    ``feat (B, N, C)``; ``nb (B*G*K,)`` and ``centre (B*G,)``: row indices into ``feat`` viewed as
    ``(B*N, C)``; ``pe`` is consumed (``x`` is written into it). Backward: ``dfeat`` gathers the rows'
    gradients per point first (``index_add``) and multiplies ``N`` rows by the weight, not ``G*K``.
    ``residual_grad=False``: ``x`` carries no gradient (a :class:`NormResidualPool` given ``feat`` routes the
    residual's)."""

    @staticmethod
    def forward(ctx, feat: torch.Tensor, pe: torch.Tensor, nb: torch.Tensor, centre: torch.Tensor,
                weight: torch.Tensor, bias: torch.Tensor | None, residual_grad: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
        B, N, C = feat.shape
        rows = feat.reshape(B * N, C)
        x = pe.view(-1, 2, C)  # (B*G*K, neighbour | centre, C)
        x[:, 0].add_(rows.index_select(0, nb))
        x.view(centre.shape[0], -1, 2, C)[:, :, 1].add_(rows.index_select(0, centre).unsqueeze(1))
        x = x.view(-1, 2 * C)
        a = torch.mm(x, weight.t()) if bias is None else torch.addmm(bias, x, weight.t())
        ctx.mark_dirty(pe)
        if not residual_grad:
            ctx.mark_non_differentiable(pe)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(pe, weight, nb, centre)
        ctx.feat_shape = feat.shape
        return pe, a

    @staticmethod
    def backward(ctx, dx: torch.Tensor | None, da: torch.Tensor | None):
        x, weight, nb, centre = ctx.saved_tensors
        B, N, C = ctx.feat_shape
        x = x.view(-1, 2 * C)
        need = ctx.needs_input_grad
        dfeat = dweight = dbias = None
        if need[0]:
            dfeat = x.new_zeros(B * N, C)
            if da is not None:
                per_point = da.new_zeros(B * N, da.shape[1]).index_add_(0, nb, da)
                per_centre = da.new_zeros(B * N, da.shape[1]).index_add_(
                    0, centre, da.view(len(centre), -1, da.shape[1]).sum(1))
                dfeat = per_point @ weight[:, :C] + per_centre @ weight[:, C:]
            if dx is not None:  # the residual's gradient reaches the features through the same gather
                dx = dx.reshape(len(centre), -1, 2, C)
                dfeat.index_add_(0, nb, dx.view(-1, 2, C)[:, 0]).index_add_(0, centre, dx[:, :, 1].sum(1))
            dfeat = dfeat.view(B, N, C)
        if da is not None:
            dweight = da.t().mm(x) if need[4] else None
            dbias = da.sum(0) if need[5] else None
        return dfeat, None, None, None, dweight, dbias, None
