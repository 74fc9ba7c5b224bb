"""Where the virtual-projection encoding enters the blocks, and the released arms' other per-arm behaviours
(any2point.md §1.2, §10.4, §10.14).

``pe_injection``:
- ``once``: added to the point tokens at the input (the paper's T_in = T + mean_j PE(p_j)); the default.
- ``every_block``: added before every block, not at the input: block k sees x + [cls_pos; PE] (the released
  DINOv2 arm, ``x = blk(x + pos)`` with pos = [cls_pos; PE]). The residual stream keeps each addition.
- ``double_first_then_every_block``: added at the input AND before every block, so block 1 sees
  tokens + 2 PE (the released CLIP-text arm: ``x = x + pos``, then ``x = blk(x + pos)``).
- ``released``: what the backbone declares for its arm (``a2p_pe_injection``: CLIP text doubles at block 1,
  DINOv2 adds before every block, ImageBind and the backbones without released code add once).

``drop_bias_kv``: the released ImageBind arm loaded the audio blocks into timm attention and silently dropped
the learned ``bias_k``/``bias_v`` key/value token; the flag removes them from every attention of the backbone
(found by type), part of ``as_released`` where the backbone lists it in ``a2p_arm_quirks``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peft3d.core.errors import ConfigError

MODES = ("once", "every_block", "double_first_then_every_block")


def arm_behaviour(cfg: Any, backbone: str) -> dict[str, Any]:
    """``{"pe_injection": one of MODES, "drop_bias_kv": bool}`` in force on ``backbone`` (a registry name),
    read from the backbone's declarations (``a2p_arm_quirks``, ``a2p_pe_injection``)."""
    from peft3d.backbones import declared

    released = cfg.variant == "as_released"
    mode = cfg.pe_injection or ("released" if released else "once")
    if mode == "released":
        mode = declared(backbone, "a2p_pe_injection", "once")
    drop = cfg.drop_bias_kv
    if drop is None:
        drop = released and "drop_bias_kv" in declared(backbone, "a2p_arm_quirks", ())
    return {"pe_injection": mode, "drop_bias_kv": bool(drop)}


def drop_bias_kv(backbone: nn.Module) -> int:
    """Remove ``bias_k``/``bias_v`` from every ``nn.MultiheadAttention`` in the backbone's blocks (the
    attention then runs without the extra key/value token); returns the number of parameters removed."""
    removed = 0
    for m in backbone.blocks.modules():
        if isinstance(m, nn.MultiheadAttention) and m.bias_k is not None:
            removed += m.bias_k.numel() + m.bias_v.numel()
            m.bias_k = None
            m.bias_v = None
    if not removed:
        raise ConfigError(f"any2point: drop_bias_kv is on but {backbone.spec.name} has no attention with "
                          "bias_k/bias_v (set drop_bias_kv: false)")
    return removed


class PEInjection(nn.Module):
    """Replaces ``model.pos_embed`` when the encoding enters before the blocks (``every_block``,
    ``double_first_then_every_block``): returns the input encoding (zeros for ``every_block``) and keeps the
    encoding of this forward for :meth:`before_block`."""

    def __init__(self, projection: nn.Module, mode: str, model: nn.Module) -> None:
        super().__init__()
        if mode not in MODES[1:]:
            raise ValueError(f"PEInjection is for {MODES[1:]}, got {mode!r}")
        self.projection, self.mode = projection, mode
        self._model = [model]  # a list: the model owns this module, not the other way round

    def forward(self, centres: torch.Tensor) -> torch.Tensor:  # (B, N, 3) -> (B, N, D)
        pe = self.projection(centres)
        self._model[0].context.cache["a2p_pe"] = pe
        return torch.zeros_like(pe) if self.mode == "every_block" else pe

    def before_block(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """``x (B, T, D)`` the block's input -> x + [cls_pos; PE]. In ``every_block`` the model has already
        added cls_pos to the cls token at the input, so block 1 adds PE only (block 1 then sees exactly
        [cls + cls_pos; tokens + PE], as in the released arm)."""
        model = self._model[0]
        pe = model.context.cache["a2p_pe"]
        n = x.shape[1] - pe.shape[1]
        if n == 0:  # a pipeline without a cls token (pipeline.cls_token: false): PE only
            return x + pe
        cls_pos = model.cls_pos.expand(len(x), n, -1)
        if index == 0 and self.mode == "every_block":
            cls_pos = torch.zeros_like(cls_pos)
        return x + torch.cat([cls_pos, pe], dim=1)
