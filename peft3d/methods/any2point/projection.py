"""3D-to-any virtual projection (any2point.md §2): token centres -> positions in the backbone's own positional
table (2D: pixels of M virtual views; 1D: positions on M lines), the averaged pretrained encoding, and the
per-forward geometry the guided adapter reuses in every block (cells of each view, 3D voxels).

Everything is batched over samples, views and tokens; the only Python loops run over the <= 4 interpolation
corners and, at construction, over the <= 6 view matrices.

2D, ``fixed``: camera on view axis k at ``camera_distance``; u = x/z, v = y/z; the field of view [-1, 1]^2
fills the canvas: px = (u + 1) W / 2 - 0.5, py = (v + 1) H / 2 - 0.5 (pixel centres at integers; on DINOv2's
square 518 canvas exactly the released map; on a non-square table every row and column stays in use, where
square pixels would leave SSAST's 8 x 64 grid 2 usable rows); clamped to the canvas. Patch (i, j) has its
centre at pixel ``o + (i, j) * stride``, the grid of patch centres centred on the canvas (exact for DINOv2,
DeiT and SSAST, whose patches tile the canvas; ImageBind's stride-10 stem leaves a margin of 2 / 8 px, which
this splits evenly); bilinear interpolation between the 4 nearest patch centres.
2D cells: squares of ``cell_2d`` patches over the patch grid. 1D, ``fixed``: M distinct lines through the
centroid (golden-spiral directions on the half sphere), min..max of each sample mapped to [0, L - 1], linear
interpolation between the two nearest rows; segments of ``cell_1d`` rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from peft3d.backbones.base import PosTable
from peft3d.core.errors import ConfigError
from peft3d.models.views import bilinear_corners, spiral_lines, view_rotations  # noqa: F401  (shared with models)

MAX_KEY = 1 << 16  # voxel coordinates per axis packed into one int64 key


def released_lines(direction: tuple[float, ...], m: int) -> torch.Tensor:
    """``(m, 3)``: the released 1D lines, one direction d seen through each cube view: (R p) . d = p . (R^T d)."""
    d = torch.tensor(direction, dtype=torch.float32)
    return torch.einsum("mij,i->mj", view_rotations(m), d / d.norm())


@dataclass
class Geometry:
    """What one forward's token centres give, shared by the positional encoding and every block.

    View-major layout (views first, so per-view work is a batched matmul over M without permutes):
    ``coord``: per-view positions (1D ``(M, B, N)`` table rows; 2D ``(M, B, N, 2)`` pixels (py, px));
    ``pe``: ``(B, N, D)``; ``cell``: ``(M, B, N)`` cell of each token in each view; ``same_cell``:
    ``(M, B, N, N)``; ``group``: ``(M, B, N)`` compact id of (view, sample, cell) in ``[0, n_groups)``, ordered
    by view; ``group_view`` / ``group_count``: view and token count of each group; ``view_rows``: ``(M,)`` rows each
    view's cell BatchNorm counts (occupied cells, plus empty ones under ``bn_empty_cells``); ``voxel``:
    ``(B, N)`` compact voxel ids with ``voxel_count``.
    """

    coord: torch.Tensor
    pe: torch.Tensor
    cell: torch.Tensor
    same_cell: torch.Tensor
    group: torch.Tensor
    group_view: torch.Tensor
    group_count: torch.Tensor
    view_rows: torch.Tensor
    voxel: torch.Tensor
    voxel_count: torch.Tensor

    @property
    def n_groups(self) -> int:
        return self.group_count.shape[0]


class VirtualProjection(nn.Module):
    """``forward(centres (B, N, 3)) -> (B, N, D)``: replaces ``PointModel.pos_embed``. The table is read from
    the backbone's frozen buffer at every call (never copied, so loading weights later is seen)."""

    def __init__(self, backbone: nn.Module, cfg: Any, flags: dict[str, bool], context: Any) -> None:
        super().__init__()
        self._backbone = [backbone]  # a list: not a submodule (the backbone is registered on the model)
        self._context = [context]
        self.cfg, self.flags, self.views = cfg, flags, cfg.views
        table: PosTable = backbone.pos_table()
        self.ndim = table.ndim
        if self.ndim == 1:
            self.length = table.table.shape[0]
            self.n_cells = math.ceil(self.length / cfg.cell_1d)
            lines = released_lines(cfg.line_dir, self.views) if flags["line_rotations"] else spiral_lines(self.views)
            self.register_buffer("lines", lines, persistent=False)
        elif self.ndim == 2:
            self._init_2d(table)
        else:
            raise ConfigError(f"any2point: positional table must be 1D or 2D, got shape {tuple(table.table.shape)}")

    def _init_2d(self, table: PosTable) -> None:
        rows, cols = table.table.shape[:2]
        if table.patch is None:
            raise ConfigError("any2point: a 2D PosTable needs its patch stride")
        self.stride = (float(table.patch[0]), float(table.patch[1]))
        canvas = table.canvas or (rows * table.patch[0], cols * table.patch[1])
        if self.flags["misshaped_grid"] and rows != cols:  # the flattened rows read as (cols x rows)
            rows, cols = cols, rows
        if (self.flags["released_canvas"] or self.flags["misshaped_grid"]) and table.kernel is not None:
            # The released code took overlapping patches for a tiling of kernel-sized ones: its canvas is the
            # (possibly misshaped) grid x kernel px, with cells in kernel px (ImageBind: 19 x 12 patches of
            # 16 px = 304 x 192 px, not the 190 x 120 px the real 10 px stride would give).
            self.stride = (float(table.kernel[0]), float(table.kernel[1]))
            canvas = (rows * table.kernel[0], cols * table.kernel[1])
        elif self.flags["misshaped_grid"] and (rows, cols) != tuple(table.table.shape[:2]):
            canvas = (rows * table.patch[0], cols * table.patch[1])
        self.grid, self.canvas = (rows, cols), (float(canvas[0]), float(canvas[1]))
        if self.flags["released_canvas"]:  # cells in pixels from the canvas origin
            side = (self.cfg.cell_2d * self.stride[0], self.cfg.cell_2d * self.stride[1])
            self.cells_hw = (math.ceil(self.canvas[0] / side[0]), math.ceil(self.canvas[1] / side[1]))
        else:  # cells over the patch grid
            self.cells_hw = tuple(math.ceil(n / self.cfg.cell_2d) for n in self.grid)
        self.n_cells = self.cells_hw[0] * self.cells_hw[1]
        self.register_buffer("rot", view_rotations(self.views), persistent=False)

    # -- the table ----------------------------------------------------------------------------------------
    def table(self) -> torch.Tensor:
        """``(K, D)``: the backbone's table, rows flattened row-major (a 2D misshape needs no data move)."""
        t = self._backbone[0].pos_table().table
        return t.reshape(-1, t.shape[-1])

    # -- forward ------------------------------------------------------------------------------------------
    def forward(self, centres: torch.Tensor) -> torch.Tensor:  # (B, N, 3) -> (B, N, D)
        return self.geometry(centres).pe

    def geometry(self, centres: torch.Tensor) -> Geometry:
        """Computed once per forward and cached in the model's context (keyed by the centres tensor)."""
        cache = self._context[0].cache
        hit = cache.get("a2p")
        if hit is not None and hit[0] is centres:
            return hit[1]
        # centres come from FPS: nothing upstream to differentiate. Geometry in fp32 even under bf16 autocast:
        # bf16 has 8 significant bits, so a position of 510.6 on a 512-row table rounds to 512 (out of range).
        with torch.no_grad(), torch.autocast(centres.device.type, enabled=False):
            g = self._compute(centres.detach().float())
        cache["a2p"] = (centres, g)
        return g

    def _compute(self, c: torch.Tensor) -> Geometry:
        if self.ndim == 1:
            coord, idx, w, cell = self._project_1d(c)
        else:
            coord, idx, w, cell = self._project_2d(c)
        pe = self._sample(idx, w)
        return self._groups(c, coord, pe, cell)

    # -- 1D lines -----------------------------------------------------------------------------------------
    def _project_1d(self, c: torch.Tensor):
        L, f = self.length, self.flags
        s = torch.einsum("bnk,mk->mbn", c - c.mean(1, keepdim=True), self.lines)  # (M, B, N)
        lo, hi = s.amin(-1, keepdim=True), s.amax(-1, keepdim=True)
        sn = (s - lo) / (hi - lo).clamp_min(1e-12)  # per sample and line: [0, 1]
        pos = torch.remainder(sn * L - 0.5, L) if f["wrap"] else sn * (L - 1)
        x = pos * (L - 1) / (pos.amax() - pos.amin()).clamp_min(1e-12) if f["batch_rescale"] else pos
        if f["lerp_quirk"]:  # released: floor/ceil, clamped, weights (ceil - x, x - floor)
            i0, i1 = x.floor().clamp(0, L - 1), x.ceil().clamp(0, L - 1)
            w = torch.stack([i1 - x, x - i0], -1)
        else:
            i0 = x.floor().clamp(0, max(L - 2, 0))
            i1 = (i0 + 1).clamp(max=L - 1)
            frac = (x - i0).clamp(0, 1)
            w = torch.stack([1 - frac, frac], -1)
        idx = torch.stack([i0, i1], -1).long()  # (M, B, N, 2)
        cell = (pos / self.cfg.cell_1d).floor().long().clamp(0, self.n_cells - 1)
        return pos, idx, w, cell

    # -- 2D views -----------------------------------------------------------------------------------------
    def _project_2d(self, c: torch.Tensor):
        f, (H, W), (gh, gw) = self.flags, self.canvas, self.grid
        p = torch.einsum("mij,bnj->mbni", self.rot, c)  # (M, B, N, 3): R @ p per view
        z = p[..., 2] + self.cfg.camera_distance
        if f["released_canvas"]:
            u, v = p[..., 0] / (z + 1e-12), p[..., 1] / (z + 1e-12)
            px, py = (u + 1) * W / 2 - 0.5, (v * H / W + 1) * H / 2 - 0.5
        else:
            z = z.clamp_min(1e-3)  # at or behind the camera: onto the canvas edge, not mirrored
            px, py = (p[..., 0] / z + 1) * W / 2 - 0.5, (p[..., 1] / z + 1) * H / 2 - 0.5
        if f["wrap"]:
            px, py = torch.remainder(px, W), torch.remainder(py, H)
        else:
            px, py = px.clamp(0, W - 1), py.clamp(0, H - 1)
        sy, sx = self.stride
        if f["released_canvas"]:  # grid_sample(align_corners=True) over the pixel range
            gx, gy = px * (gw - 1) / max(W - 1, 1), py * (gh - 1) / max(H - 1, 1)
            cx = (px / (self.cfg.cell_2d * sx)).floor()
            cy = (py / (self.cfg.cell_2d * sy)).floor()
        else:
            gx = (px - (W - (gw - 1) * sx - 1) / 2) / sx
            gy = (py - (H - (gh - 1) * sy - 1) / 2) / sy
            cx = ((gx.clamp(-0.5, gw - 0.5) + 0.5) / self.cfg.cell_2d).floor()
            cy = ((gy.clamp(-0.5, gh - 0.5) + 0.5) / self.cfg.cell_2d).floor()
            gx, gy = gx.clamp(0, gw - 1), gy.clamp(0, gh - 1)
        ch, cw = self.cells_hw
        cell = cy.long().clamp(0, ch - 1) * cw + cx.long().clamp(0, cw - 1)
        idx, w = bilinear_corners(gy, gx, gh, gw)
        return torch.stack([py, px], -1), idx, w, cell

    # -- sampling the table -------------------------------------------------------------------------------
    def _sample(self, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``idx, w (M, B, N, C)`` rows of the flattened table and their weights -> ``(B, N, D)``."""
        table = self.table()
        M, B, N, C = idx.shape
        if self.ndim == 2 and self.flags["scrambled_pe"]:
            per_view = sum(w[..., k, None] * table[idx[..., k]] for k in range(C))  # (M, B, N, D)
            return scramble(per_view.transpose(0, 1)).mean(1)
        # Mean over views and corners as one sparse (B, N, K) weight matrix: a single matmul with the table.
        weights = torch.zeros(B, N, table.shape[0], dtype=table.dtype, device=table.device)
        weights.scatter_add_(2, idx.permute(1, 2, 0, 3).reshape(B, N, M * C),
                             (w / M).to(table.dtype).permute(1, 2, 0, 3).reshape(B, N, M * C))
        return weights @ table

    def view_pe(self, centres: torch.Tensor) -> torch.Tensor:
        """``(M, B, N, D)``: each view's own (un-scrambled) encoding of each token — for tests and analysis."""
        c = centres.detach()
        _, idx, w, _ = self._project_1d(c) if self.ndim == 1 else self._project_2d(c)
        table = self.table()
        return sum(w[..., k, None] * table[idx[..., k]] for k in range(idx.shape[-1]))

    # -- cells and voxels ---------------------------------------------------------------------------------
    def _groups(self, c: torch.Tensor, coord: torch.Tensor, pe: torch.Tensor, cell: torch.Tensor) -> Geometry:
        M, B, N = cell.shape
        dev = cell.device
        key = (torch.arange(M, device=dev).view(M, 1, 1) * B + torch.arange(B, device=dev).view(1, B, 1)) \
            * self.n_cells + cell
        uniq, group, count = torch.unique(key.flatten(), return_inverse=True, return_counts=True)
        group_view = torch.div(uniq, B * self.n_cells, rounding_mode="floor")
        rows = torch.bincount(group_view, minlength=M).to(pe.dtype)
        if self.flags["bn_empty_cells"]:
            rows = torch.full_like(rows, float(B * self.n_cells))
        voxel, voxel_count = voxelise(c, self.cfg.voxel)
        return Geometry(coord=coord, pe=pe, cell=cell, same_cell=cell.unsqueeze(-1) == cell.unsqueeze(-2),
                        group=group.view(M, B, N), group_view=group_view, group_count=count.to(pe.dtype),
                        view_rows=rows, voxel=voxel, voxel_count=voxel_count.to(pe.dtype))


def scramble(per_view: torch.Tensor) -> torch.Tensor:
    """The released 2D reshape (any2point.md §2.1): grid_sample gives ``[B*M, D, N(, 1)]`` and is reshaped to
    ``[B, M, N, D]`` without a permute. ``per_view (B, M, N, D)`` is the correct per-token layout."""
    B, M, N, D = per_view.shape
    return per_view.permute(0, 1, 3, 2).reshape(B, M, N, D)


def voxelise(c: torch.Tensor, size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample voxel grid (torch_geometric ``voxel_grid`` with coordinates minus the sample's minimum):
    ``(B, N)`` compact voxel ids over the whole batch and the token count of each voxel."""
    B, N, _ = c.shape
    v = ((c - c.amin(1, keepdim=True)) / size).floor().long().clamp(0, MAX_KEY - 1)  # (B, N, 3)
    b = torch.arange(B, device=c.device).view(B, 1)
    key = ((b * MAX_KEY + v[..., 0]) * MAX_KEY + v[..., 1]) * MAX_KEY + v[..., 2]
    _, inv, count = torch.unique(key.flatten(), return_inverse=True, return_counts=True)
    return inv.view(B, N), count
