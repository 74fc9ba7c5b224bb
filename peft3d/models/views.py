"""Geometry shared by every projection of 3D token centres onto a pretrained positional table: the cube-face
views (2D tables), the lines through the centroid (1D tables) and bilinear sampling of a 2D grid. Used by the
pipeline's ``pos_encoding: table`` (peft3d.models.positional) and by Any2Point's virtual projection."""
from __future__ import annotations

import math

import torch

from peft3d.core.errors import ConfigError

# The released PCViews Euler angles (rx, ry, rz), R = Rx @ Ry @ Rz; optical axes +z, +x, -z, -x, -y, +y.
VIEW_ANGLES = ((0.0, 0.0, math.pi / 2), (math.pi / 2, 0.0, math.pi / 2), (math.pi, 0.0, math.pi / 2),
               (3 * math.pi / 2, 0.0, math.pi / 2), (0.0, -math.pi / 2, math.pi / 2), (0.0, math.pi / 2, math.pi / 2))


def euler_matrix(rx: float, ry: float, rz: float) -> list[list[float]]:
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    rot_x = [[1, 0, 0], [0, cx, -sx], [0, sx, cx]]
    rot_y = [[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]
    rot_z = [[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]

    def mul(a, b):
        return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]

    return mul(mul(rot_x, rot_y), rot_z)


def view_rotations(m: int) -> torch.Tensor:
    """``(m, 3, 3)``: the first ``m`` released cube views; a centre p is seen at ``R @ p``."""
    if not 1 <= m <= len(VIEW_ANGLES):
        raise ConfigError(f"any2point: the cube-face views are 1..6, got views={m}")
    return torch.tensor([euler_matrix(*a) for a in VIEW_ANGLES[:m]], dtype=torch.float32)


def spiral_lines(m: int) -> torch.Tensor:
    """``(m, 3)`` distinct unit directions spread over the half sphere (golden spiral): M lines through the
    centroid with evenly spread orientations (the paper's "uniformly distributed rotation angles")."""
    k = torch.arange(m, dtype=torch.float64)
    z = 1 - (k + 0.5) / m
    r = (1 - z * z).sqrt()
    phi = k * math.pi * (3 - math.sqrt(5))
    return torch.stack([r * phi.cos(), r * phi.sin(), z], 1).float()


def bilinear_corners(gy: torch.Tensor, gx: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 table rows around continuous grid positions and their bilinear weights, ``(..., 4)`` each;
    corners outside the grid get weight 0 (grid_sample's zero padding)."""
    y0, x0 = gy.floor(), gx.floor()
    fy, fx = gy - y0, gx - x0
    idx, w = [], []
    for dy, dx, wk in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        inside = (yy >= 0) & (yy <= rows - 1) & (xx >= 0) & (xx <= cols - 1)
        idx.append(torch.where(inside, yy * cols + xx, torch.zeros_like(yy)))
        w.append(torch.where(inside, wk, torch.zeros_like(wk)))
    return torch.stack(idx, -1).long(), torch.stack(w, -1)
