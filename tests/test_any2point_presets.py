"""Any2Point presets come from what a backbone declares (``a2p_settings``, ``pos_shape``, ``a2p_arm_quirks``):
a backbone registered later, in a module of its own, gets working presets with no edit in ``methods/``."""
from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from fixtures_backbones import one_thread  # noqa: F401  (autouse fixture)

from peft3d.backbones import BACKBONES
from peft3d.core.spec import RunSpec, TokenizerCfg
from peft3d.methods.any2point.config import ARM_ONLY, FLAGS, PAPER, Any2PointConfig
from peft3d.methods.build import build_model

TINY_TOKENIZER = TokenizerCfg(num_stages=1, embed_dim=16, k=8, lga_blocks=(1,), last_bottleneck=8)

THROWAWAY = '''
import dataclasses

from peft3d.backbones.hf_vit import build_test_deit


def build(weights: str = "random", device: str = "cpu"):
    bb = build_test_deit(weights, device)
    bb.spec = dataclasses.replace(bb.spec, name="{name}")
    return bb
'''


@pytest.fixture
def register(tmp_path, monkeypatch):
    """Registers backbones from a module written to a temp folder; the registry is restored afterwards."""
    monkeypatch.setattr(BACKBONES, "_targets", dict(BACKBONES._targets))
    monkeypatch.setattr(BACKBONES, "_meta", dict(BACKBONES._meta))
    monkeypatch.setattr(BACKBONES, "_cache", dict(BACKBONES._cache))
    monkeypatch.syspath_prepend(str(tmp_path))

    def _register(name: str, **meta) -> None:
        (tmp_path / f"{name}_module.py").write_text(textwrap.dedent(THROWAWAY.format(name=name)))
        sys.modules.pop(f"{name}_module", None)
        BACKBONES.register(name, f"{name}_module:build", modality="2d", width=32, depth=2, pretrain="vision",
                           source="a throwaway test module", weights_check="random", **meta)

    return _register


def _forward(backbone: str, cfg: dict) -> torch.Tensor:
    spec = RunSpec(backbone=backbone, method="any2point", weights="random", tokenizer=TINY_TOKENIZER,
                   head_hidden=16, method_cfg=cfg)
    model, _ = build_model(spec, num_classes=3)
    model.train()
    torch.manual_seed(0)
    logits = model(torch.rand(2, 64, 3))
    logits.sum().backward()
    return logits


def test_a_backbone_registered_later_gets_working_presets(register):
    register("throwaway_vit", a2p_settings="dinov2", a2p_arm_quirks=(), a2p_pe_injection="once", pos_shape=(4, 5))
    presets = Any2PointConfig.presets
    assert {"throwaway_vit_scan", "throwaway_vit_mn40", "throwaway_vit_synthetic"} <= set(presets)
    scan = presets["throwaway_vit_scan"]
    # the DINOv2 arm's ScanObjectNN settings, cells rescaled from 37 patch rows to 4: 26/14 * 4/37
    assert scan == dict(PAPER["paper_dinov2_scan"], cell_2d=0.201)
    cfg = Any2PointConfig.resolve(None, "throwaway_vit_scan", where="test").to_dict()
    logits = _forward("throwaway_vit", cfg)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    released = Any2PointConfig.resolve({"variant": "as_released"}, "throwaway_vit_mn40", where="test")
    model_flags = released.flags(BACKBONES.meta("throwaway_vit")["a2p_arm_quirks"])
    assert model_flags == {f: f not in ARM_ONLY for f in FLAGS}  # generic flags only: no arm of its own
    assert torch.isfinite(_forward("throwaway_vit", released.to_dict())).all()


def test_a_backbone_that_declares_no_arm_follows_its_modality(register):
    register("bare_vit")
    assert Any2PointConfig.presets["bare_vit_mn40"] == PAPER["paper_dinov2_mn40"]


def test_declared_quirks_put_an_arm_only_flag_in_force(register):
    register("quirky_vit", a2p_settings="imagebind_audio", a2p_arm_quirks=("misshaped_grid",), pos_shape=(4, 5))
    cfg = Any2PointConfig(variant="as_released")
    assert cfg.flags(BACKBONES.meta("quirky_vit")["a2p_arm_quirks"])["misshaped_grid"]
    assert Any2PointConfig.presets["quirky_vit_scan"]["cell_2d"] == 1.0  # ImageBind arm: one patch per cell
    assert torch.isfinite(_forward("quirky_vit", cfg.to_dict())).all()


def test_presets_of_the_paper_backbones_keep_their_settings():
    """Literal values: a change here changes the run_id of every stored result that used the preset."""
    p = Any2PointConfig.presets
    assert p["roberta_scan"]["cell_1d"] == p["minilm_mn40"]["cell_1d"] == 13.3  # 2 of 77 rows -> of 512
    assert p["clip_text_scan"] == PAPER["paper_clip_text_scan"]
    assert p["deit_mn40"] == dict(PAPER["paper_dinov2_mn40"], cell_2d=0.703)  # 26/518 of a 224 canvas, 16 px
    assert p["dinov2_scan"]["cell_2d"] == 26 / 14 and p["ssast_scan"] == PAPER["paper_imagebind_audio_scan"]
    assert p["imagebind_audio_synthetic"] == PAPER["paper_imagebind_audio_scan"]
    assert p["test_dinov2_scan"]["bottleneck"] == 4  # tiny twins: a small bottleneck


# The no-transformer control (backbone none) has no blocks and no positional table: nothing for Any2Point.
WITH_TABLE = [n for n in BACKBONES.names() if not BACKBONES.meta(n).get("control")]


@pytest.mark.parametrize("backbone", WITH_TABLE)
def test_every_backbone_declares_what_any2point_reads(backbone):
    meta = BACKBONES.meta(backbone)
    assert meta["a2p_settings"] in ("clip_text", "dinov2", "imagebind_audio")
    assert set(meta["a2p_arm_quirks"]) <= ARM_ONLY
    assert meta["a2p_pe_injection"] in ("double_first_then_every_block", "every_block", "once")
    assert len(meta["pos_shape"]) == (1 if meta["modality"] == "1d" else 2)


@pytest.mark.parametrize("backbone", WITH_TABLE)
def test_declared_pos_shape_is_the_tables_shape(backbone):
    test = BACKBONES.meta(backbone).get("test")
    bb = BACKBONES.get(backbone)(weights="random", device="cpu" if test else "meta")
    assert tuple(bb.pos_table().table.shape[:-1]) == BACKBONES.meta(backbone)["pos_shape"]
