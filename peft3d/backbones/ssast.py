"""ssast: SSAST-Base-Patch-400 (backbones.md §6), the self-supervised Audio Spectrogram Transformer.

SSAST's code pins timm 0.4.5; its skeleton is timm's distilled DeiT-B (``deit_base_distilled_patch16_384``)
with a 1-channel 16x16 patch embedding and a fresh 8 x 64 (+ cls + dist) position table for 128 mel bins x
1024 frames. Here the same ``VisionTransformerDistilled`` is built in timm 1.x with ``img_size=(128, 1024)``,
``in_chans=1``, ``num_classes=0``; the checkpoint's ``module.v.*`` keys load into it strictly.
Pretraining-only heads (``cpredlayer``, ``gpredlayer``, ``mask_embed``) and the unused ImageNet classifiers
(``v.head``, ``v.head_dist``) are allow-listed; ``p_input_fdim``/``p_input_tdim`` are read to check the grid.
Attention runs the explicit (non-fused) path, like the transformers backbones here run eager attention.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peft3d.backbones.base import Backbone, BackboneSpec
from peft3d.backbones.loading import (
    finish,
    install_site,
    load_strict,
    random_only,
    read_state_dict,
    resolve_weights,
    verify_digest,
)
from peft3d.backbones.preln import PreLNBackbone, grid_table
from peft3d.backbones.sources import parse_weights
from peft3d.core.errors import WeightsError

SSAST_BASE = {"width": 768, "depth": 12, "heads": 12, "input": (128, 1024), "patch": 16}  # 8 x 64 grid
TINY_SSAST = {"width": 32, "depth": 2, "heads": 2, "input": (64, 80), "patch": 16}  # 4 x 5 grid
WEIGHTS_CHECK = "file:SSAST-Base-Patch-400.pth"
HOW = ("put SSAST-Base-Patch-400.pth (README of github.com/YuanGongND/ssast: "
       "https://www.dropbox.com/s/ewrzpco95n9jdz6/SSAST-Base-Patch-400.pth?dl=1) in $PEFT3D_WEIGHTS "
       "(default ./weights), or pass weights: path:/file.pth")
PREFIX = "module.v."
UNUSED = ("module.cpredlayer.", "module.gpredlayer.", "module.mask_embed", "module.p_input_fdim",
          "module.p_input_tdim", "head.", "head_dist.")

SSAST_SPEC = BackboneSpec(
    name="ssast", modality="2d", pretrain_modality="audio", width=768, depth=12, heads=12, family="pre_ln",
    source="SSAST-Base-Patch-400.pth", licence="bsd-3-clause", get_weights=HOW)
TEST_SSAST_SPEC = BackboneSpec(
    name="test_ssast", modality="2d", pretrain_modality="none", width=32, depth=2, heads=2, family="pre_ln",
    source="random (tiny test model)", licence="n/a", get_weights="always random")


def grid_of(cfg: dict[str, Any]) -> tuple[int, int]:
    return cfg["input"][0] // cfg["patch"], cfg["input"][1] // cfg["patch"]


def _construct(cfg: dict[str, Any], device: str) -> nn.Module:
    from timm.models.deit import VisionTransformerDistilled

    with torch.device(device):
        v = VisionTransformerDistilled(img_size=tuple(cfg["input"]), patch_size=cfg["patch"], in_chans=1,
                                       num_classes=0, embed_dim=cfg["width"], depth=cfg["depth"],
                                       num_heads=cfg["heads"], mlp_ratio=4.0, qkv_bias=True)
    for blk in v.blocks:
        blk.attn.fused_attn = False  # explicit softmax attention (backbones.md pitfall 2)
    return v


class SSASTBackbone(PreLNBackbone):
    def __init__(self, spec: BackboneSpec, v: nn.Module, cfg: dict[str, Any]) -> None:
        blocks = list(v.blocks)
        sites = [install_site(b, "mlp", "ls2") for b in blocks]  # ls2 is Identity in DeiT: kept general
        super().__init__(spec, blocks, sites, [[b.attn.qkv, b.attn.proj] for b in blocks],
                         grid_table(v.pos_embed, 2, grid_of(cfg)),  # rows 0, 1: cls, distillation
                         final_norm=v.norm, canvas=tuple(cfg["input"]), patch=(cfg["patch"], cfg["patch"]))


def check_grid(name: str, where: Any, sd: dict[str, torch.Tensor], cfg: dict[str, Any]) -> None:
    """The pretraining input size stored in the checkpoint must give this backbone's grid."""
    if "module.p_input_fdim" not in sd or "module.p_input_tdim" not in sd:
        raise WeightsError(f"{name}: {where} lacks module.p_input_fdim / module.p_input_tdim: not an SSAST "
                           "pretraining checkpoint (keys with the DataParallel 'module.' prefix); "
                           f"fix: {HOW}")
    f, t = int(sd["module.p_input_fdim"]), int(sd["module.p_input_tdim"])
    if (f, t) != tuple(cfg["input"]):
        raise WeightsError(f"{name}: {where} was pretrained on {f} mel bins x {t} frames "
                           f"(grid {f // cfg['patch']}x{t // cfg['patch']}); this backbone expects "
                           f"{cfg['input'][0]} x {cfg['input'][1]} (grid {grid_of(cfg)})")


def build(spec: BackboneSpec, cfg: dict[str, Any], weights: str, device: str) -> Backbone:
    kind, _ = parse_weights(weights)
    info: dict[str, Any] = {"source": weights}
    if kind == "random" or device == "meta":
        v = _construct(cfg, device)
    else:
        form, where = resolve_weights(spec.name, weights, WEIGHTS_CHECK, HOW)
        if form != "file":
            raise WeightsError(f"{spec.name}: expects the checkpoint file SSAST-Base-Patch-400.pth, got the "
                               f"folder {where}; fix: {HOW}")
        digest = verify_digest(spec.name, where)
        raw = read_state_dict(spec.name, where)
        check_grid(spec.name, where, raw, cfg)
        sd = {(k.removeprefix(PREFIX)): t for k, t in raw.items()}
        v = _construct(cfg, "cpu")
        load_strict(spec.name, where, v, sd, UNUSED)
        info.update(path=str(where), file_sha256=digest)
        v = v.to(device)
    return finish(SSASTBackbone(spec, v, cfg), info, device)


def build_ssast(weights: str = "pretrained", device: str = "cpu") -> Backbone:
    return build(SSAST_SPEC, SSAST_BASE, weights, device)


def build_test_ssast(weights: str = "random", device: str = "cpu") -> Backbone:
    random_only(TEST_SSAST_SPEC.name, weights)
    return build(TEST_SSAST_SPEC, TINY_SSAST, weights, device)
