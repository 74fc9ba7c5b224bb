"""Positional encodings of token centres for the shared pipeline (``PipelineCfg.pos_encoding``).

- ``mlp``: a learned 3D MLP on the centres (Point-BERT / Point-MAE style; the paper pipeline's choice).
- ``table``: the backbone's own pretrained positional table, read through a fixed 3D -> 1D / 2D projection
  of the centres (the geometry Any2Point uses, without its released-code quirks): a 1D table is read at the
  centres' positions along M lines through the centroid (each line's min..max mapped to rows 0..L-1, linear
  interpolation), a 2D table at their perspective projections in M cube-face views (bilinear over the patch
  grid); the M readings are averaged. No trainable weights: the encoding the blocks were trained with.
- ``none``: nothing is added.
"""
from __future__ import annotations

import torch
from torch import nn

from peft3d.backbones.base import PosTable
from peft3d.core.errors import ConfigError
from peft3d.models.views import bilinear_corners, spiral_lines, view_rotations

TABLE_VIEWS = 6  # lines (1D) or cube faces (2D) averaged
CAMERA_DISTANCE = 1.4  # 2D: the camera distance of Any2Point's released 2D projection (--trans)


class MLPPosEncoder(nn.Module):
    """Learned positional encoding of token centres: a small 3D MLP (Point-BERT / Point-MAE style)."""

    def __init__(self, width: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, centres: torch.Tensor) -> torch.Tensor:  # (B, G, 3) -> (B, G, D)
        return self.net(centres)


class NoPosEncoder(nn.Module):
    def forward(self, centres: torch.Tensor) -> torch.Tensor:
        return centres.new_zeros(())  # broadcasts: tokens + 0


class TablePosEncoder(nn.Module):
    """``centres (B, G, 3) -> (B, G, D)`` from the backbone's frozen table (read at every call, never copied)."""

    def __init__(self, backbone: nn.Module, views: int = TABLE_VIEWS) -> None:
        super().__init__()
        self._backbone = [backbone]  # a list: not a submodule (the backbone is registered on the model)
        table: PosTable = backbone.pos_table()
        self.ndim = table.ndim
        if self.ndim == 1:
            self.register_buffer("lines", spiral_lines(views), persistent=False)
        elif self.ndim == 2:
            if table.patch is None:
                raise ConfigError(f"pos_encoding table: backbone {backbone.spec.name}'s 2D table has no patch stride")
            self.register_buffer("rot", view_rotations(views), persistent=False)
        else:
            raise ConfigError(f"pos_encoding table: table must be 1D or 2D, got shape {tuple(table.table.shape)}")

    def forward(self, centres: torch.Tensor) -> torch.Tensor:
        table = self._backbone[0].pos_table()
        c = centres.detach().float()
        with torch.autocast(c.device.type, enabled=False):  # indices in fp32: bf16 would round past the table
            idx, w = self._corners_1d(c, table.table.shape[0]) if self.ndim == 1 else self._corners_2d(c, table)
        flat = table.table.reshape(-1, table.table.shape[-1])
        M = idx.shape[0]
        return sum(w[..., k, None] * flat[idx[..., k]] for k in range(idx.shape[-1])).sum(0) / M

    def _corners_1d(self, c: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.einsum("bnk,mk->mbn", c - c.mean(1, keepdim=True), self.lines)  # (M, B, G)
        lo, hi = s.amin(-1, keepdim=True), s.amax(-1, keepdim=True)
        x = (s - lo) / (hi - lo).clamp_min(1e-12) * (length - 1)
        i0 = x.floor().clamp(0, max(length - 2, 0))
        frac = (x - i0).clamp(0, 1)
        return torch.stack([i0, (i0 + 1).clamp(max=length - 1)], -1).long(), torch.stack([1 - frac, frac], -1)

    def _corners_2d(self, c: torch.Tensor, table: PosTable) -> tuple[torch.Tensor, torch.Tensor]:
        gh, gw = table.table.shape[:2]
        sy, sx = float(table.patch[0]), float(table.patch[1])
        H, W = table.canvas or (gh * sy, gw * sx)
        p = torch.einsum("mij,bnj->mbni", self.rot, c)  # (M, B, G, 3)
        z = (p[..., 2] + CAMERA_DISTANCE).clamp_min(1e-3)
        px = ((p[..., 0] / z + 1) * W / 2 - 0.5).clamp(0, W - 1)
        py = ((p[..., 1] / z + 1) * H / 2 - 0.5).clamp(0, H - 1)
        gx = ((px - (W - (gw - 1) * sx - 1) / 2) / sx).clamp(0, gw - 1)  # patch-centre grid, centred on canvas
        gy = ((py - (H - (gh - 1) * sy - 1) / 2) / sy).clamp(0, gh - 1)
        return bilinear_corners(gy, gx, gh, gw)


def make_pos_encoder(kind: str, backbone: nn.Module, width: int) -> nn.Module:
    if kind == "mlp":
        return MLPPosEncoder(width)
    if kind == "table":
        return TablePosEncoder(backbone)
    if kind == "none":
        return NoPosEncoder()
    raise ConfigError(f"pos_encoding must be mlp, table or none, got {kind!r}")
