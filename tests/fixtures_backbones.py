"""Writers of tiny checkpoints in each backbone's *original* format, with the original key names.

Each writer uses the tiny architecture of the matching ``test_*`` registry entry, so the family's real loader
(``peft3d.backbones.<family>.build(spec, tiny_cfg, "path:...", ...)``) reads it strictly.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and on a shared 2-core machine torch's spinning worker
    threads made each tiny train step 50x slower (1.5 s instead of 0.03 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape) * 0.05


def _ln(sd: dict, prefix: str, d: int) -> None:
    sd[prefix + ".weight"] = 1 + _randn(d)
    sd[prefix + ".bias"] = _randn(d)


def _linear(sd: dict, prefix: str, out: int, inp: int, bias: bool = True) -> None:
    sd[prefix + ".weight"] = _randn(out, inp)
    if bias:
        sd[prefix + ".bias"] = _randn(out)


# -- CLIP ---------------------------------------------------------------------------------------------

def write_clip_hf(folder: Path) -> Path:
    """A whole tiny ``CLIPModel`` (text + vision towers) saved with ``save_pretrained``, like the Hub repo."""
    from transformers import CLIPConfig, CLIPModel

    from peft3d.backbones.clip import TINY_TEXT

    vision = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1,
                  "image_size": 32, "patch_size": 16, "projection_dim": 32}
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=TINY_TEXT, vision_config=vision, projection_dim=32))
    model.save_pretrained(folder)
    return folder


def clip_openai_state(depth: int = 2, d: int = 32, hidden: int = 64, ctx: int = 16, vocab: int = 64) -> dict:
    """The OpenAI ``clip/model.py`` layout: text keys plus a few ``visual.*`` keys (allow-listed)."""
    torch.manual_seed(0)
    sd = {"token_embedding.weight": _randn(vocab, d), "positional_embedding": _randn(ctx, d)}
    for i in range(depth):
        p = f"transformer.resblocks.{i}"
        _linear(sd, f"{p}.attn.in_proj", 3 * d, d)
        sd[f"{p}.attn.in_proj_weight"] = sd.pop(f"{p}.attn.in_proj.weight")
        sd[f"{p}.attn.in_proj_bias"] = sd.pop(f"{p}.attn.in_proj.bias")
        _linear(sd, f"{p}.attn.out_proj", d, d)
        _ln(sd, f"{p}.ln_1", d)
        _linear(sd, f"{p}.mlp.c_fc", hidden, d)
        _linear(sd, f"{p}.mlp.c_proj", d, hidden)
        _ln(sd, f"{p}.ln_2", d)
    _ln(sd, "ln_final", d)
    sd["text_projection"] = _randn(d, d)
    sd["logit_scale"] = torch.tensor(4.6052)
    sd["visual.class_embedding"] = _randn(d)
    sd["visual.conv1.weight"] = _randn(d, 3, 16, 16)
    return sd


def write_clip_openai(path: Path) -> Path:
    torch.save(clip_openai_state(), path)
    return path


# -- RoBERTa ------------------------------------------------------------------------------------------

def write_roberta_hf(folder: Path) -> Path:
    """A tiny ``RobertaForMaskedLM`` (what the Hub's roberta-base holds: ``roberta.*`` + ``lm_head.*``)."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    from peft3d.backbones.bert import TINY_ROBERTA

    torch.manual_seed(0)
    RobertaForMaskedLM(RobertaConfig(**TINY_ROBERTA)).save_pretrained(folder)
    return folder


# -- DINOv2 / DeiT ------------------------------------------------------------------------------------

def write_dinov2_hf(folder: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    from peft3d.backbones.hf_vit import TINY_DINOV2

    torch.manual_seed(0)
    m = Dinov2Model(Dinov2Config(**TINY_DINOV2))
    with torch.no_grad():  # layer scale is 1.0 at init: make it visible to the parity test
        for layer in m.encoder.layer:
            layer.layer_scale1.lambda1.uniform_(0.5, 1.5)
            layer.layer_scale2.lambda1.uniform_(0.5, 1.5)
    m.save_pretrained(folder)
    return folder


def timm_dinov2():
    """The original DINOv2 ViT-B/14 skeleton, tiny (timm's vit_base_patch14_dinov2 class and names)."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    v = VisionTransformer(img_size=56, patch_size=14, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4,
                          init_values=1.0, num_classes=0)
    with torch.no_grad():
        for b in v.blocks:
            b.ls1.gamma.uniform_(0.5, 1.5)
            b.ls2.gamma.uniform_(0.5, 1.5)
    return v


def write_dinov2_original(path: Path):
    """``dinov2_vitb14_pretrain.pth`` layout: timm names plus ``mask_token`` [1, D] (backbones.md §3.8)."""
    v = timm_dinov2()
    sd = dict(v.state_dict())
    sd["mask_token"] = torch.zeros(1, 32)
    torch.save(sd, path)
    return v


def write_deit_hf(folder: Path) -> Path:
    """The Hub's DeiT: a ``ViTForImageClassification`` checkpoint (backbones.md §4.1)."""
    from transformers import ViTConfig, ViTForImageClassification

    from peft3d.backbones.hf_vit import TINY_DEIT

    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(**TINY_DEIT, num_labels=10)).save_pretrained(folder)
    return folder


def timm_deit():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(img_size=(64, 80), patch_size=16, embed_dim=32, depth=2, num_heads=2,
                             mlp_ratio=2,
                             num_classes=10)


def write_deit_timm(path: Path):
    """The original DeiT release format: ``{"model": state_dict}`` with timm names and a 1000-way head."""
    v = timm_deit()
    torch.save({"model": v.state_dict()}, path)
    return v


# -- ImageBind ----------------------------------------------------------------------------------------

def imagebind_state(depth: int = 2, d: int = 32, hidden: int = 128, rows: int = 21, out: int = 16) -> dict:
    """``imagebind_huge.pth`` layout (backbones.md §5.8): the audio keys plus a few other-modality keys."""
    torch.manual_seed(0)
    pre, trunk = "modality_preprocessors.audio.", "modality_trunks.audio.blocks."
    sd = {pre + "cls_token": _randn(1, 1, d), pre + "rgbt_stem.proj.weight": _randn(d, 1, 16, 16),
          pre + "pos_embedding_helper.pos_embed": _randn(1, rows, d)}
    _ln(sd, pre + "rgbt_stem.norm_layer", d)
    for i in range(depth):
        p = f"{trunk}{i}."
        sd[p + "attn.in_proj_weight"] = _randn(3 * d, d)
        sd[p + "attn.in_proj_bias"] = _randn(3 * d)
        sd[p + "attn.bias_k"] = _randn(1, 1, d) * 20  # large enough to matter in the parity test
        sd[p + "attn.bias_v"] = _randn(1, 1, d) * 20
        _linear(sd, p + "attn.out_proj", d, d)
        _ln(sd, p + "norm_1", d)
        _linear(sd, p + "mlp.fc1", hidden, d)
        _linear(sd, p + "mlp.fc2", d, hidden)
        _ln(sd, p + "norm_2", d)
    _ln(sd, "modality_heads.audio.0", d)
    sd["modality_heads.audio.2.weight"] = _randn(out, d)
    sd["modality_postprocessors.audio.1.log_logit_scale"] = torch.tensor(2.9957)
    # other modalities: allow-listed as unused
    sd["modality_preprocessors.vision.cls_token"] = _randn(1, 1, d)
    sd["modality_trunks.vision.blocks.0.attn.in_proj_weight"] = _randn(3 * d, d)
    sd["modality_heads.text.proj.0.weight"] = _randn(d)
    sd["modality_postprocessors.text.1.log_logit_scale"] = torch.tensor(2.0)
    return sd


def write_imagebind(path: Path) -> dict:
    sd = imagebind_state()
    torch.save(sd, path)
    return sd


# -- SSAST --------------------------------------------------------------------------------------------

def ssast_state(depth: int = 2, d: int = 32, grid: tuple[int, int] = (4, 5), fdim: int = 64,
                tdim: int = 80) -> dict:
    """``SSAST-Base-Patch-400.pth`` layout (backbones.md §6.8): DataParallel ``module.`` prefix."""
    torch.manual_seed(0)
    v = "module.v."
    sd = {v + "cls_token": _randn(1, 1, d), v + "dist_token": _randn(1, 1, d),
          v + "pos_embed": _randn(1, 2 + grid[0] * grid[1], d),
          v + "patch_embed.proj.weight": _randn(d, 1, 16, 16),
          v + "patch_embed.proj.bias": _randn(d)}
    for i in range(depth):
        p = f"{v}blocks.{i}."
        _ln(sd, p + "norm1", d)
        _linear(sd, p + "attn.qkv", 3 * d, d)
        _linear(sd, p + "attn.proj", d, d)
        _ln(sd, p + "norm2", d)
        _linear(sd, p + "mlp.fc1", 4 * d, d)
        _linear(sd, p + "mlp.fc2", d, 4 * d)
    _ln(sd, v + "norm", d)
    _linear(sd, v + "head", 1000, d)
    _linear(sd, v + "head_dist", 1000, d)
    sd["module.p_input_fdim"] = torch.tensor(fdim)
    sd["module.p_input_tdim"] = torch.tensor(tdim)
    sd["module.mask_embed"] = _randn(1, 1, d)
    for head in ("cpredlayer", "gpredlayer"):
        _linear(sd, f"module.{head}.0", d, d)
        _linear(sd, f"module.{head}.2", 256, d)
    return sd


def write_ssast(path: Path) -> dict:
    sd = ssast_state()
    torch.save(sd, path)
    return sd
