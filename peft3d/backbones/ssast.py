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

from peft3d.backbones.base import BackboneSpec
from peft3d.backbones.loading import CheckpointProblem, Config, Family, StateDictFile, Tensors
from peft3d.backbones.preln import PreLNBackbone, grid_table, install_site

SSAST_BASE = {"width": 768, "depth": 12, "heads": 12, "input": (128, 1024), "patch": 16}  # 8 x 64 grid
TINY_SSAST = {"width": 32, "depth": 2, "heads": 2, "input": (64, 80), "patch": 16}  # 4 x 5 grid
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
    return v  # the loader sets the explicit softmax attention (backbones.md pitfall 2)


class SSASTBackbone(PreLNBackbone):
    def __init__(self, spec: BackboneSpec, v: nn.Module, cfg: dict[str, Any]) -> None:
        blocks = list(v.blocks)
        sites = [install_site(b, "mlp", "ls2") for b in blocks]  # ls2 is Identity in DeiT: kept general
        super().__init__(spec, blocks, sites, [[b.attn.qkv, b.attn.proj] for b in blocks],
                         grid_table(v.pos_embed, 2, grid_of(cfg)),  # rows 0, 1: cls, distillation
                         final_norm=v.norm, canvas=tuple(cfg["input"]), patch=(cfg["patch"], cfg["patch"]))


def check_grid(sd: Tensors, cfg: Config) -> None:
    """The pretraining input size stored in the checkpoint must give this backbone's grid."""
    if "module.p_input_fdim" not in sd or "module.p_input_tdim" not in sd:
        raise CheckpointProblem("lacks module.p_input_fdim / module.p_input_tdim: not an SSAST pretraining "
                                f"checkpoint (keys with the DataParallel 'module.' prefix); fix: {HOW}")
    f, t = int(sd["module.p_input_fdim"]), int(sd["module.p_input_tdim"])
    if (f, t) != tuple(cfg["input"]):
        raise CheckpointProblem(f"pretrained on {f} mel bins x {t} frames (grid {f // cfg['patch']}x"
                                f"{t // cfg['patch']}); this backbone expects {cfg['input'][0]} x {cfg['input'][1]} "
                                f"(grid {grid_of(cfg)})")


def strip_prefix(sd: Tensors, cfg: Config) -> Tensors:
    return {k.removeprefix(PREFIX): t for k, t in sd.items()}


SSAST = Family(construct=_construct, backbone=SSASTBackbone,
               formats=(StateDictFile(strip_prefix, UNUSED, check=check_grid),))
build = SSAST.build  # (spec, cfg, weights, device)

build_ssast = SSAST.variant(SSAST_SPEC, SSAST_BASE)
build_test_ssast = SSAST.variant(TEST_SSAST_SPEC, TINY_SSAST, tiny=True)
