"""The pre-LN backbone wrapper shared by CLIP text, DINOv2, DeiT, ImageBind audio and SSAST.

Every family builds its own pretrained blocks (the model's own attention, norms and layer scale), installs a
:class:`~peft3d.backbones.base.PreLNFFNSite` in place of each block's FFN, and hands them here together with
the modules LoRA should wrap, the positional table and the final norm.
"""
from __future__ import annotations

import torch
from torch import nn

from peft3d.backbones.base import Backbone, BackboneSpec, PosTable, PreLNFFNSite


class PreLNBackbone(Backbone):
    def __init__(self, spec: BackboneSpec, blocks: list[nn.Module], sites: list[PreLNFFNSite],
                 lora: list[list[nn.Module]], table: torch.Tensor, final_norm: nn.Module,
                 canvas: tuple[int, int] | None = None, patch: tuple[int, int] | None = None,
                 embed_norm: nn.Module | None = None, kernel: tuple[int, int] | None = None) -> None:
        super().__init__(spec)
        self.blocks = nn.ModuleList(blocks)
        # Kept as a buffer: read by positional encodings (Any2Point), never trained, not even by ``full``.
        self.register_buffer("position_table", table.detach().clone())
        self.canvas, self.patch, self.kernel = canvas, patch, kernel
        self.final_norm = final_norm
        self.embed_norm = embed_norm if embed_norm is not None else nn.Identity()
        # Plain lists (not submodules): the same modules are already registered under ``blocks``; keeping
        # the objects rather than names keeps these accessors valid when a method wraps a block.
        self._sites = list(sites)
        self._lora = [list(m) for m in lora]
        # FFN projections: every pre-LN family's MLP (now inside its site) names them fc1 (up) and fc2 (down).
        self._ffn = [[site.mlp.fc1, site.mlp.fc2] for site in sites]

    def pos_table(self) -> PosTable:
        return PosTable(self.position_table, self.canvas, self.patch, self.kernel)

    def ffn_site(self, i: int) -> PreLNFFNSite:
        return self._sites[i]

    def lora_targets(self, i: int) -> list[str]:
        return self._names_in_block(i, self._lora[i], "LoRA")

    def ffn_targets(self, i: int) -> list[str]:
        return self._names_in_block(i, self._ffn[i], "FFN")

    def _names_in_block(self, i: int, modules: list[nn.Module], what: str) -> list[str]:
        names = {id(m): n for n, m in self.blocks[i].named_modules()}
        missing = [m for m in modules if id(m) not in names]
        if missing:
            raise RuntimeError(f"{self.spec.name}: {what} target modules of block {i} are no longer inside it "
                               f"(already wrapped?): {[type(m).__name__ for m in missing]}")
        return [names[id(m)] for m in modules]


def grid_table(pos: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """``[1, prefix + H*W, D]`` (row-major patches after the special tokens) -> ``[H, W, D]``."""
    h, w = grid
    if pos.shape[1] != prefix + h * w:
        raise ValueError(f"position table has {pos.shape[1]} rows, expected {prefix} + {h}x{w}")
    return pos[0, prefix:].reshape(h, w, pos.shape[-1])


def install_site(block: nn.Module, mlp_attr: str = "mlp", scale_attr: str | None = None) -> PreLNFFNSite:
    """Put a :class:`PreLNFFNSite` in place of ``block.<mlp_attr>``; the layer scale, if any, moves into the
    site (and becomes identity in the block) so hooks see the FFN output as it joins the residual."""
    scale = getattr(block, scale_attr) if scale_attr else None
    site = PreLNFFNSite(getattr(block, mlp_attr), scale)
    setattr(block, mlp_attr, site)
    if scale_attr:
        setattr(block, scale_attr, nn.Identity())
    return site
