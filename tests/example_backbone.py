"""A backbone family written from nothing, as a user adds one: timm's ViT, read strictly from timm's own
checkpoint file. This file and one ``BACKBONES.register(...)`` line are all a new backbone needs
(docs/architecture.md "A backbone"); tests/test_backbone_family.py registers it and runs it through the loader,
the controls and every method.
"""
from __future__ import annotations

import torch

from peft3d.backbones.base import BackboneSpec
from peft3d.backbones.loading import Family, StateDictFile
from peft3d.backbones.preln import PreLNBackbone, grid_table, install_site

# The architecture, as the original code's constructor takes it (here: a tiny one, a 3 x 4 patch grid).
TINY_VIT = {"img_size": (48, 64), "patch_size": 16, "embed_dim": 24, "depth": 2, "num_heads": 2}
EXAMPLE_SPEC = BackboneSpec(name="example_vit", modality="2d", pretrain_modality="vision", width=24, depth=2,
                            heads=2, family="pre_ln", source="example_vit.pth (timm)", licence="n/a",
                            get_weights="put example_vit.pth in $PEFT3D_WEIGHTS, or pass weights: path:/file.pth")


def construct(cfg: dict, device: str) -> torch.nn.Module:
    """The original model with its library's random initialisation."""
    from timm.models.vision_transformer import VisionTransformer

    with torch.device(device):
        return VisionTransformer(num_classes=0, **cfg)


class ExampleViT(PreLNBackbone):
    """What methods see: the blocks (FFN sites installed), LoRA's modules, the 2D table, the final norm."""

    def __init__(self, spec: BackboneSpec, vit: torch.nn.Module, cfg: dict) -> None:
        blocks = list(vit.blocks)
        sites = [install_site(b, "mlp", "ls2") for b in blocks]
        (h, w), p = cfg["img_size"], cfg["patch_size"]
        super().__init__(spec, blocks, sites, [[b.attn.qkv, b.attn.proj] for b in blocks],
                         grid_table(vit.pos_embed, 1, (h // p, w // p)), final_norm=vit.norm, canvas=(h, w),
                         patch=(p, p))


# timm's checkpoint keys are the model's own names (no key map); its classifier is not used.
EXAMPLE = Family(construct=construct, backbone=ExampleViT, formats=(StateDictFile(unused=("head.",)),))
build_example_vit = EXAMPLE.variant(EXAMPLE_SPEC, TINY_VIT)
