"""Any2Point's last released-code differences, pinned with values computed by hand: ImageBind's released
304 x 192 px canvas of 16 px patches, where the positional encoding enters (``pe_injection``), and
ImageBind's dropped ``bias_k``/``bias_v`` (``drop_bias_kv``)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from fixtures_backbones import one_thread  # noqa: F401  (autouse fixture)
from torch import nn

from peft3d.backbones.base import PosTable
from peft3d.backbones.imagebind import build_imagebind_audio
from peft3d.core.errors import ConfigError
from peft3d.core.spec import PipelineCfg, RunSpec, TokenizerCfg
from peft3d.methods.any2point.config import Any2PointConfig
from peft3d.methods.any2point.injection import arm_behaviour, drop_bias_kv
from peft3d.methods.any2point.projection import VirtualProjection
from peft3d.methods.build import build_model
from peft3d.models.model import ForwardContext

TINY_TOKENIZER = TokenizerCfg(num_stages=1, embed_dim=16, k=8, lga_blocks=(1,), last_bottleneck=8)


# -- 1. ImageBind's released canvas --------------------------------------------------------------------------

def test_imagebind_released_canvas_is_304_by_192_px_of_16_px_patches():
    """ImageBind's 12 x 19 table (16 px kernels, stride 10) read as 19 x 12: canvas 19*16 x 12*16 = 304 x 192 px,
    cells of 16 px. Point (0, 0.69, 0), camera 1.4, view 0 (p' = (-y, x, z)): u = -0.69 / 1.4, v = 0, so
    px = (u + 1) * 192 / 2 - 0.5 = 48.1857 (cell column 3; the rebuilt 120 px canvas gave 29.93, column 2),
    py = (0 + 1) * 304 / 2 - 0.5 = 151.5 (cell row 9), cell 9 * 12 + 3 = 111, and grid_sample's
    align_corners position gx = 48.1857 * 11 / 191 = 2.77510, gy = 151.5 * 18 / 303 = 9."""
    torch.manual_seed(0)
    table = PosTable(torch.randn(12, 19, 4), canvas=(128, 204), patch=(10, 10), kernel=(16, 16))
    cfg = Any2PointConfig(variant="as_released", views=1, cell_2d=1.0, camera_distance=1.4)
    flags = dict(cfg.flags(()), misshaped_grid=True, released_canvas=True, scrambled_pe=False)
    proj = VirtualProjection(SimpleNamespace(pos_table=lambda: table), cfg, flags, ForwardContext())
    assert proj.canvas == (304.0, 192.0) and proj.stride == (16.0, 16.0) and proj.cells_hw == (19, 12)
    g = proj.geometry(torch.tensor([[[0.0, 0.69, 0.0]]]))
    py, px = g.coord[0, 0, 0].tolist()
    assert px == pytest.approx(48.185714, abs=1e-4) and py == pytest.approx(151.5, abs=1e-4)
    assert g.cell[0, 0, 0].item() == 111
    # the encoding is the bilinear mix of the four table rows around (gy, gx) = (9, 2.77510) of the 19 x 12 view
    rows = table.table.reshape(19, 12, 4)
    fx = 48.185714 * 11 / 191 - 2
    expected = (1 - fx) * rows[9, 2] + fx * rows[9, 3]
    assert torch.allclose(g.pe[0, 0], expected, atol=1e-4)


# -- 2. pe_injection ------------------------------------------------------------------------------------------

class Recorder(nn.Module):
    """Stands in for a frozen block: identity, recording what it is given."""

    def __init__(self, seen: list) -> None:
        super().__init__()
        self.seen = seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return x


def _block_inputs(backbone: str, **cfg):
    """Inputs of the two blocks (identity stand-ins; coef 0 so the guided branch adds exactly 0), with the
    tokenizer's tokens, the encoding and the cls parts they are made of."""
    spec = RunSpec(backbone=backbone, method="any2point", weights="random", tokenizer=TINY_TOKENIZER,
                   head_hidden=16, method_cfg=Any2PointConfig.resolve({"coef": 0.0, **cfg}).to_dict(),
                   pipeline=PipelineCfg(pos_encoding="mlp", cls_token=True, head="paper"))  # the released code's
    model, _ = build_model(spec, num_classes=3)
    model.eval()
    seen: list = []
    for blk in model.backbone.blocks:
        blk.block = Recorder(seen)
    torch.manual_seed(0)
    xyz = torch.rand(2, 64, 3)
    with torch.no_grad():
        model(xyz)
        tokens, centres = model.tokenizer(xyz)
        proj = getattr(model.pos_embed, "projection", model.pos_embed)
        pe = proj(centres)
    return model, seen, tokens, pe


@pytest.mark.parametrize("backbone,mode,token_pe,cls_pos", [
    # hand-computed: how many times PE (tokens) and cls_pos (cls token) block 1 and block 2 have received
    ("test_dinov2", "once", (1, 1), (1, 1)),
    ("test_dinov2", "every_block", (1, 2), (1, 2)),
    ("test_dinov2", "released", (1, 2), (1, 2)),  # DINOv2's arm: before every block
    ("test_clip_text", "released", (2, 3), (2, 3)),  # CLIP's arm: block 1 gets tokens + 2 PE, then + PE per block
    ("test_imagebind_audio", "released", (1, 1), (1, 1)),  # ImageBind's arm: once
])
def test_pe_injection_counts(backbone, mode, token_pe, cls_pos):
    model, seen, tokens, pe = _block_inputs(backbone, pe_injection=mode)
    assert len(seen) == 2
    expected_mode = {(1, 1): "once", (1, 2): "every_block", (2, 3): "double_first_then_every_block"}[token_pe]
    assert model.a2p_pe_injection == expected_mode
    cls = model.cls_token[0, 0]
    for k, x in enumerate(seen):
        assert torch.allclose(x[:, 1:], tokens + token_pe[k] * pe, atol=1e-5), (k, mode)
        assert torch.allclose(x[:, 0], (cls + cls_pos[k] * model.cls_pos[0, 0]).expand(2, -1), atol=1e-6), (k, mode)


def test_pe_injection_follows_the_declarations():
    rel, fixed = Any2PointConfig(variant="as_released"), Any2PointConfig()
    assert arm_behaviour(rel, "clip_text")["pe_injection"] == "double_first_then_every_block"
    assert arm_behaviour(rel, "dinov2")["pe_injection"] == "every_block"
    assert arm_behaviour(rel, "imagebind_audio")["pe_injection"] == "once"
    assert arm_behaviour(rel, "roberta")["pe_injection"] == "once"
    assert {arm_behaviour(fixed, b)["pe_injection"] for b in ("clip_text", "dinov2", "imagebind_audio")} == {"once"}
    explicit = Any2PointConfig(variant="as_released", pe_injection="once")
    assert arm_behaviour(explicit, "dinov2")["pe_injection"] == "once"
    with pytest.raises(ConfigError, match="pe_injection must be one of"):
        Any2PointConfig.resolve({"pe_injection": "twice"})


# -- 3. drop_bias_kv ------------------------------------------------------------------------------------------

def _hand_mha() -> nn.MultiheadAttention:
    """2 channels, 1 head, identity projections, zero biases, bias_k = (0, 0), bias_v = (2, 2)."""
    mha = nn.MultiheadAttention(2, 1, bias=True, add_bias_kv=True, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([torch.eye(2)] * 3))
        mha.in_proj_bias.zero_()
        mha.out_proj.weight.copy_(torch.eye(2))
        mha.out_proj.bias.zero_()
        mha.bias_k.zero_()
        mha.bias_v.fill_(2.0)
    return mha


def test_drop_bias_kv_hand_computed():
    """One token x = (1, 0). With bias_k/bias_v: scores (x.x, x.0) / sqrt(2) = (0.70711, 0); weight on the
    token w = 1 / (1 + e^-0.70711) = 0.669762, output w (1, 0) + (1 - w)(2, 2) = (1.330238, 0.660477).
    Without them the token attends to itself only: (1, 0)."""
    mha = _hand_mha()
    x = torch.tensor([[[1.0, 0.0]]])
    w = 1 / (1 + math.exp(-1 / math.sqrt(2)))
    assert w == pytest.approx(0.669762, abs=1e-6)
    with torch.no_grad():
        assert mha(x, x, x)[0][0, 0].tolist() == pytest.approx([1.330238, 0.660477], abs=1e-5)
    fake = SimpleNamespace(blocks=nn.ModuleList([mha]), spec=SimpleNamespace(name="fake"))
    assert drop_bias_kv(fake) == 4
    with torch.no_grad():
        assert mha(x, x, x)[0][0, 0].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    assert "bias_k" not in dict(mha.named_parameters())
    with pytest.raises(ConfigError, match="no attention with bias_k/bias_v"):
        drop_bias_kv(fake)


def test_drop_bias_kv_removes_18432_parameters_from_imagebind():
    """12 blocks x (bias_k + bias_v) x 768 = 18,432 frozen parameters (real size, on the meta device)."""
    bb = build_imagebind_audio(weights="random", device="meta")
    before = sum(p.numel() for p in bb.parameters())
    assert drop_bias_kv(bb) == 12 * 2 * 768 == 18_432
    assert before - sum(p.numel() for p in bb.parameters()) == 18_432


def test_drop_bias_kv_is_part_of_as_released_where_declared():
    rel = Any2PointConfig(variant="as_released")
    assert arm_behaviour(rel, "imagebind_audio")["drop_bias_kv"] is True
    assert arm_behaviour(rel, "dinov2")["drop_bias_kv"] is False
    assert arm_behaviour(Any2PointConfig(), "imagebind_audio")["drop_bias_kv"] is False
    for variant, frozen_drop in (("fixed", 0), ("as_released", 2 * 2 * 32)):  # tiny: 2 blocks x 2 x width 32
        spec = RunSpec(backbone="test_imagebind_audio", method="any2point", weights="random",
                       tokenizer=TINY_TOKENIZER, head_hidden=16,
                       method_cfg=Any2PointConfig.resolve({"variant": variant}).to_dict())
        model, _ = build_model(spec, num_classes=3)
        frozen = sum(p.numel() for p in model.backbone.blocks.parameters() if not p.requires_grad)
        assert model.a2p_flags["drop_bias_kv"] == (variant == "as_released")
        if variant == "fixed":
            reference = frozen
        else:
            assert reference - frozen == frozen_drop
