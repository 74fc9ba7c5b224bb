"""Any2Point geometry and layers, pinned on hand-computed cases: the six cube views, the pixel / line position
of known points, the encoding of a token on a patch centre, cells, voxels, the cell-restricted attention, the
per-view BatchNorm, the ensemble weights, and the released code's scrambled 2D encoding (any2point.md §2-3)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from fixtures_backbones import one_thread  # noqa: F401  (autouse fixture)

from peft3d.backbones import BACKBONES
from peft3d.backbones.base import PosTable
from peft3d.methods.any2point.config import Any2PointConfig
from peft3d.methods.any2point.layers import LocalAttentions, ViewBatchNorm, ensemble_weights, pool
from peft3d.methods.any2point.projection import (
    VirtualProjection,
    released_lines,
    scramble,
    spiral_lines,
    view_rotations,
    voxelise,
)
from peft3d.models.model import ForwardContext

# p' = R p for the six released views, written out by hand from the Euler angles (any2point.md §2.1).
VIEWS = [lambda x, y, z: (-y, x, z), lambda x, y, z: (-y, -z, x), lambda x, y, z: (-y, -x, -z),
         lambda x, y, z: (-y, z, -x), lambda x, y, z: (-z, x, -y), lambda x, y, z: (z, x, y)]
DINO = dict(shape=(37, 37), canvas=(518, 518), patch=(14, 14))  # 518 px, 14-px patches
AUDIO = dict(shape=(12, 19), canvas=(128, 204), patch=(10, 10))  # ImageBind: 12 freq x 19 time, stride 10


class FakeBackbone:
    def __init__(self, table: torch.Tensor, canvas=None, patch=None) -> None:
        self.t = PosTable(table, canvas, patch)

    def pos_table(self) -> PosTable:
        return self.t


def projection(table: torch.Tensor, backbone: str = "dinov2", canvas=None, patch=None, **cfg) -> VirtualProjection:
    """The projection on a fake table, with the released-arm quirks that ``backbone`` declares."""
    c = Any2PointConfig(**cfg)
    flags = c.flags(BACKBONES.meta(backbone)["a2p_arm_quirks"])
    return VirtualProjection(FakeBackbone(table, canvas, patch), c, flags, ForwardContext())


def table_2d(shape, d: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(*shape, d)


def test_cube_views_look_along_the_six_axes():
    axes = torch.tensor([[0, 0, 1], [1, 0, 0], [0, 0, -1], [-1, 0, 0], [0, -1, 0], [0, 1, 0]], dtype=torch.float32)
    R = view_rotations(6)
    assert torch.allclose(R[:, 2], axes, atol=1e-6)
    p = torch.tensor([0.1, 0.2, 0.3])
    assert torch.allclose(R @ p, torch.tensor([f(*p.tolist()) for f in VIEWS]), atol=1e-6)


def _expected_pixels(p, d, canvas):
    out = []
    for f in VIEWS:
        X, Y, Z = f(*p)
        out.append(((Y / (Z + d) + 1) * canvas[0] / 2 - 0.5, (X / (Z + d) + 1) * canvas[1] / 2 - 0.5))  # (py, px)
    return torch.tensor(out)


@pytest.mark.parametrize("geom", [DINO, AUDIO])
def test_known_points_project_to_known_pixels(geom):
    proj = projection(table_2d(geom["shape"]), canvas=geom["canvas"], patch=geom["patch"], camera_distance=1.8)
    pts = [(0.0, 0.0, 0.0), (0.1, 0.2, 0.3), (-0.3, 0.05, 0.2)]
    g = proj.geometry(torch.tensor([pts]))
    assert g.coord.shape == (6, 1, 3, 2)
    for i, p in enumerate(pts):
        assert torch.allclose(g.coord[:, 0, i], _expected_pixels(p, 1.8, geom["canvas"]), atol=1e-4), p
    centre = g.coord[:, 0, 0]  # the origin: the canvas centre in every view (DINOv2: 258.5, 258.5)
    assert torch.allclose(centre, torch.tensor([[(geom["canvas"][0] - 1) / 2, (geom["canvas"][1] - 1) / 2]] * 6))


def test_released_canvas_pixels_and_wrap_around():
    # DINOv2 as released: px = (u + 1) * 518 / 2 - 0.5 mod 518 (identical to the fixed map inside the canvas)
    far = (0.0, -2.5, 0.0)  # view 0: u = 2.5 / 1.8 > 1, off the canvas
    fixed = projection(table_2d(DINO["shape"]), canvas=DINO["canvas"], patch=DINO["patch"], camera_distance=1.8)
    rel = projection(table_2d(DINO["shape"]), canvas=DINO["canvas"], patch=DINO["patch"], camera_distance=1.8,
                     variant="as_released")
    px = (2.5 / 1.8 + 1) * 259 - 0.5
    assert fixed.geometry(torch.tensor([[far]])).coord[0, 0, 0, 1] == pytest.approx(517.0)  # clamped
    assert rel.geometry(torch.tensor([[far]])).coord[0, 0, 0, 1] == pytest.approx(px - 518, abs=1e-3)  # wrapped
    # ImageBind as released: the 12 x 19 table read as 19 rows x 12 cols on a (19, 12)-patch canvas, v * H / W
    audio = projection(table_2d(AUDIO["shape"]), "imagebind_audio", canvas=AUDIO["canvas"], patch=AUDIO["patch"],
                       variant="as_released", cell_2d=1.0)
    assert audio.grid == (19, 12) and audio.canvas == (190.0, 120.0) and audio.cells_hw == (19, 12)
    p = (0.1, 0.2, 0.3)
    g = audio.geometry(torch.tensor([[p]]))
    X, Y, Z = VIEWS[0](*p)
    u, v = X / (Z + 1.4), Y / (Z + 1.4)
    assert g.coord[0, 0, 0].tolist() == pytest.approx([(v * 190 / 120 + 1) * 95 - 0.5, (u + 1) * 60 - 0.5], abs=1e-3)


@pytest.mark.parametrize("geom,patch_ij,origin", [(DINO, (5, 30), (6.5, 6.5)), (AUDIO, (3, 17), (8.5, 11.5))])
def test_token_on_a_patch_centre_gets_that_table_row(geom, patch_ij, origin):
    table = table_2d(geom["shape"])
    proj = projection(table, canvas=geom["canvas"], patch=geom["patch"], camera_distance=1.8)
    H, W = geom["canvas"]
    sy, sx = geom["patch"]
    py, px = origin[0] + sy * patch_ij[0], origin[1] + sx * patch_ij[1]
    u, v = (px + 0.5) * 2 / W - 1, (py + 0.5) * 2 / H - 1
    p = (v * 1.8, -u * 1.8, 0.0)  # view 0 sees (-y, x, z) at depth z + 1.8
    pe = proj.view_pe(torch.tensor([[p]]))  # (M, B, N, D)
    assert torch.allclose(pe[0, 0, 0], table[patch_ij], atol=1e-5)
    if geom is DINO:  # the origin hits the canvas centre = the centre of patch (18, 18) in every view
        assert torch.allclose(proj(torch.zeros(1, 1, 3))[0, 0], table[18, 18], atol=1e-5)


def _on_line(direction: torch.Tensor, ts) -> torch.Tensor:
    return torch.stack([t * direction for t in ts]).unsqueeze(0)  # (1, N, 3)


def test_1d_positions_and_rows():
    L = 77
    torch.manual_seed(0)
    table = torch.randn(L, 8)
    d = spiral_lines(1)[0]
    c = _on_line(d, [0.0, 1.0, 0.25, 0.5, 0.3])
    fixed = projection(table, "clip_text", views=1)
    g = fixed.geometry(c)
    assert g.coord[0, 0].tolist() == pytest.approx([0, 76, 19, 38, 22.8], abs=1e-4)  # min..max -> [0, L - 1]
    pe = fixed(c)[0]
    assert torch.allclose(pe[:4], table[[0, 76, 19, 38]], atol=1e-5)  # exact rows
    assert torch.allclose(pe[4], 0.2 * table[22] + 0.8 * table[23], atol=1e-5)  # linear interpolation
    # per-sample normalisation: another, larger sample in the batch changes nothing
    both = torch.cat([c, 3 * _on_line(d, [0.0, 0.7, 1.0, 0.1, 0.9])])
    assert torch.allclose(fixed(both)[0], pe, atol=1e-6)
    # released: pos = s * L - 0.5 mod L (the extreme-min token wraps to 76.5), zero encoding on integers
    wrapped = projection(table, "clip_text", views=1, wrap=True)
    assert wrapped.geometry(c).coord[0, 0].tolist() == pytest.approx([76.5, 76.5, 18.75, 38.0, 22.6], abs=1e-4)
    quirk = projection(table, "clip_text", views=1, lerp_quirk=True)
    assert torch.equal(quirk(c)[0, 2], torch.zeros(8))  # position 19 exactly: weights (19 - 19, 19 - 19)
    assert torch.allclose(quirk(c)[0, 4], pe[4], atol=1e-5)


def test_1d_batch_rescale_depends_on_the_batch():
    torch.manual_seed(0)
    table = torch.randn(77, 8)
    rel = projection(table, "clip_text", views=1, variant="as_released")
    d = released_lines((-1.0, 0.0, 1.0), 1)[0]
    a = _on_line(d, [0.0, 0.2, 1.0])
    b = _on_line(d, [0.0, 0.01, 1.0])
    assert not torch.allclose(rel(a)[0], rel(torch.cat([a, b]))[0])  # global max - min over the batch moved
    fixed = projection(table, "clip_text", views=1)
    assert torch.allclose(fixed(a)[0], fixed(torch.cat([a, b]))[0])


def test_released_lines_are_six_rotations_of_one_direction():
    s = 1 / math.sqrt(2)
    scan = [(0, s, s), (s, s, 0), (0, s, -s), (-s, s, 0), (0, -s, s), (0, s, -s)]  # any2point.md §2.2
    mn40 = [(-s, -s, 0), (0, -s, s), (s, -s, 0), (0, -s, -s), (-s, 0, -s), (-s, 0, s)]
    assert torch.allclose(released_lines((-1.0, 0.0, 1.0), 6), torch.tensor(scan), atol=1e-6)
    assert torch.allclose(released_lines((1.0, -1.0, 0.0), 6), torch.tensor(mn40), atol=1e-6)
    lines = spiral_lines(6)  # fixed: six distinct lines
    assert torch.allclose(lines.norm(dim=1), torch.ones(6))
    cos = (lines @ lines.T).abs() - torch.eye(6)
    assert cos.max() < 0.9


def test_cells_group_exactly_their_tokens_1d():
    proj = projection(torch.randn(77, 8), "clip_text", views=1, cell_1d=2.0)
    d = spiral_lines(1)[0]
    g = proj.geometry(_on_line(d, [0.0, 0.02, 0.03, 0.05, 1.0]))  # positions 0, 1.52, 2.28, 3.8, 76
    assert g.cell[0, 0].tolist() == [0, 0, 1, 1, 38]
    expected = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]])
    assert torch.equal(g.same_cell[0, 0], expected.bool())
    assert g.n_groups == 3 and g.group_count.tolist() == [2, 2, 1]
    assert g.group[0, 0].tolist() == [0, 0, 1, 1, 2] and g.view_rows.tolist() == [3]


def test_cells_group_exactly_their_tokens_2d():
    proj = projection(table_2d(DINO["shape"]), canvas=DINO["canvas"], patch=DINO["patch"], camera_distance=1.8)
    assert proj.cells_hw == (20, 20)  # 26 px cells on 518 px (any2point.md §3.6)
    pts = []
    for i, j in [(0, 0), (0, 1), (0, 2), (1, 1), (2, 2)]:  # patch centres in view 0
        u, v = (6.5 + 14 * j - 258.5) / 259, (6.5 + 14 * i - 258.5) / 259
        pts.append((v * 1.8, -u * 1.8, 0.0))
    g = proj.geometry(torch.tensor([pts]))
    assert g.cell[0, 0].tolist() == [0, 0, 1, 0, 21]  # patches 0-1 -> cell 0, patch 2 -> cell 1 (26/14 = 1.86)
    assert g.same_cell[0, 0].nonzero().tolist() == [[0, 0], [0, 1], [0, 3], [1, 0], [1, 1], [1, 3], [2, 2],
                                                   [3, 0], [3, 1], [3, 3], [4, 4]]
    rel = projection(table_2d(DINO["shape"]), canvas=DINO["canvas"], patch=DINO["patch"], camera_distance=1.8,
                     released_canvas=True)
    assert rel.geometry(torch.tensor([pts])).cell[0, 0].tolist() == [0, 0, 1, 0, 21]  # floor(px / 26)


def test_voxels_are_per_sample():
    c = torch.tensor([[[0.0, 0, 0], [0.05, 0.1, 0], [0.2, 0, 0], [0.0, 0.0, 0.17]],
                      [[5.0, 5, 5], [5.05, 5.1, 5], [5.2, 5, 5], [5.0, 5.0, 5.17]]])
    vox, count = voxelise(c, 0.16)
    assert vox[0].tolist() == [0, 0, 2, 1] and vox[1].tolist() == [3, 3, 5, 4]  # never shared across samples
    assert count.tolist() == [2, 1, 1, 2, 1, 1]


def test_pool_mean_and_max_plus_mean():
    torch.manual_seed(0)
    x, group = torch.randn(7, 4), torch.tensor([0, 2, 0, 1, 2, 2, 0])
    count = torch.bincount(group).float()
    for how in ("mean", "maxmean"):
        out = pool(x, group, count, how)
        for gid in range(3):
            rows = x[group == gid]
            want = rows.mean(0) + (rows.amax(0) if how == "maxmean" else 0)
            assert torch.allclose(out[gid], want, atol=1e-6)


def test_local_attention_stays_inside_cells():
    torch.manual_seed(0)
    cfg = Any2PointConfig()
    att = LocalAttentions(2, 16, cfg)
    cell = torch.tensor([[[0, 0, 1, 1, 2]], [[0, 1, 1, 0, 0]]])  # (M=2, B=1, N=5)
    same = cell.unsqueeze(-1) == cell.unsqueeze(-2)
    x = torch.randn(1, 5, 16)
    out = att(x, same).view(2, 5, 16)
    y = x.clone()
    y[0, 4] += 3.0 * torch.randn(16)  # token 4: alone in view 0; with tokens 0 and 3 in view 1
    moved = (att(y, same).view(2, 5, 16) - out).abs().amax(-1) > 1e-6
    assert moved.tolist() == [[False, False, False, False, True], [True, False, False, True, True]]


def test_view_batchnorm_is_one_batchnorm_per_view():
    torch.manual_seed(0)
    z, view = torch.randn(9, 4), torch.tensor([0, 1, 0, 0, 1, 1, 1, 0, 0])
    bn = ViewBatchNorm(2, 4)
    ref = [torch.nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4)]
    out = bn(z, view, torch.bincount(view).float())
    for m in range(2):
        assert torch.allclose(out[view == m], ref[m](z[view == m]), atol=1e-5)
        assert torch.allclose(bn.running_var[m], ref[m].running_var, atol=1e-6)
    bn.eval(), [r.eval() for r in ref]
    out = bn(z, view, torch.bincount(view).float())
    assert torch.allclose(out[view == 1], ref[1](z[view == 1]), atol=1e-5)
    # released: the statistics also count empty cells, as zero rows
    bn, ref = ViewBatchNorm(1, 4), torch.nn.BatchNorm1d(4)
    rows = z[:5]
    padded = torch.cat([rows, torch.zeros(7, 4)])
    out = bn(rows, torch.zeros(5, dtype=torch.long), torch.tensor([12.0]))
    assert torch.allclose(out, ref(padded)[:5], atol=1e-5)
    assert torch.allclose(bn.running_var[0], ref.running_var, atol=1e-6)


def test_ensemble_weights_sum_to_one_per_token():
    torch.manual_seed(0)
    per_view, x3d = torch.randn(6, 2, 9, 16), torch.randn(2, 9, 16)
    w = ensemble_weights(per_view, x3d)
    assert w.shape == (6, 2, 9)
    assert torch.allclose(w.sum(0), torch.ones(2, 9), atol=1e-6) and (w >= 0).all()
    cos = F.cosine_similarity(per_view, x3d.unsqueeze(0), dim=-1)
    assert torch.allclose(w, ((cos + 1) / 2) / ((cos + 1) / 2).sum(0), atol=1e-6)  # linear, not softmax


def test_scrambled_encoding_is_the_released_reshape():
    """As released (any2point.md §2.1): grid_sample on [B*M, D, H, W] gives [B*M, D, N, 1]; squeeze, then a
    reshape to [B, M, N, D] with no permute. The per-token encoding is the same data permuted."""
    torch.manual_seed(0)
    table = table_2d(DINO["shape"])
    rel = projection(table, canvas=DINO["canvas"], patch=DINO["patch"], camera_distance=1.8, variant="as_released")
    assert rel.flags["scrambled_pe"] and rel.flags["released_canvas"] and rel.flags["wrap"]
    centres = torch.rand(2, 5, 3) * 2 - 1
    g = rel.geometry(centres)
    B, M, N, D = 2, 6, 5, table.shape[-1]
    pix = g.coord.transpose(0, 1).reshape(B * M, N, 2)  # batch-major, as the released repeat_interleave
    grid = torch.stack([2 * pix[..., 1] / 517 - 1, 2 * pix[..., 0] / 517 - 1], -1).unsqueeze(2)  # (x, y)
    out = F.grid_sample(table.permute(2, 0, 1).expand(B * M, D, 37, 37), grid, mode="bilinear",
                        padding_mode="zeros", align_corners=True).squeeze(-1)  # (B*M, D, N)
    released = out.reshape(B, M, N, D).mean(1)
    per_token = out.reshape(B, M, D, N).permute(0, 1, 3, 2)  # (B, M, N, D): what each token should get
    assert torch.allclose(g.pe, released, atol=1e-5)
    assert torch.allclose(rel.view_pe(centres).transpose(0, 1), per_token, atol=1e-5)
    assert torch.allclose(scramble(per_token), out.reshape(B, M, N, D))
    assert not torch.allclose(released, per_token.mean(1), atol=1e-3)
    fixed = projection(table, canvas=DINO["canvas"], patch=DINO["patch"], camera_distance=1.8,
                       variant="as_released", scrambled_pe=False)
    assert torch.allclose(fixed(centres), per_token.mean(1), atol=1e-5)


def test_geometry_is_cached_per_centres_tensor():
    proj = projection(table_2d(DINO["shape"]), canvas=DINO["canvas"], patch=DINO["patch"])
    c = torch.rand(1, 4, 3)
    assert proj.geometry(c) is proj.geometry(c)
    assert proj.geometry(c.clone()) is not proj.geometry(c)
