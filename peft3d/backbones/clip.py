"""clip_text: the text tower of CLIP ViT-L/14 (backbones.md §1), through transformers' ``CLIPTextModel``.

Weights: the Hub checkpoint ``openai/clip-vit-large-patch14`` (a whole ``CLIPModel``: the vision tower is
allow-listed as unused) or OpenAI's original ``ViT-L-14.pt`` (a TorchScript archive, sha256-checked, keys
``transformer.resblocks.*`` mapped to the HF names). Blocks run bidirectionally: ``CLIPEncoderLayer``
needs its mask argument positionally, so each is wrapped in a :class:`CallBlock` that passes ``None``
(no causal mask).
"""
from __future__ import annotations

import torch
from torch import nn

from peft3d.backbones.base import BackboneSpec, CallBlock
from peft3d.backbones.checkpoints import rename, split_qkv
from peft3d.backbones.loading import Config, Family, HFFolder, StateDictFile, Tensors
from peft3d.backbones.preln import PreLNBackbone, install_site

CLIP_L14_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                 "num_hidden_layers": 12, "max_position_embeddings": 77, "vocab_size": 49408,
                 "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 768,
                 "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
TINY_TEXT = dict(CLIP_L14_TEXT, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                 num_hidden_layers=2,
                 max_position_embeddings=16, vocab_size=64, projection_dim=32)
ARCH_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
             "max_position_embeddings", "hidden_act")
HOW = ("huggingface-cli download openai/clip-vit-large-patch14 (then run offline), or put ViT-L-14.pt from "
       "https://openaipublic.azureedge.net/clip/models/"
       "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt in $PEFT3D_WEIGHTS "
       "(default ./weights), or pass weights: path:/dir_or_file")
# Hub CLIPModel checkpoint: everything outside the text tower.
HF_UNUSED = ("vision_model.", "visual_projection.", "text_projection.", "logit_scale")
# OpenAI checkpoint: the vision tower, the joint-space projection, and build_model's bookkeeping entries.
OPENAI_UNUSED = ("visual.", "text_projection", "logit_scale", "input_resolution", "context_length",
                 "vocab_size")

CLIP_TEXT_SPEC = BackboneSpec(
    name="clip_text", modality="1d", pretrain_modality="language", width=768, depth=12, heads=12,
    family="pre_ln", source="openai/clip-vit-large-patch14 (text tower) | ViT-L-14.pt", licence="mit",
    get_weights=HOW)
TEST_CLIP_TEXT_SPEC = BackboneSpec(
    name="test_clip_text", modality="1d", pretrain_modality="none", width=32, depth=2, heads=2,
    family="pre_ln", source="random (tiny test model)", licence="n/a", get_weights="always random")


def _call_no_mask(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return block(x, None)  # attention_mask is positional without default; None = bidirectional


class CLIPTextBackbone(PreLNBackbone):
    def __init__(self, spec: BackboneSpec, hf: nn.Module) -> None:
        sites, lora, blocks = [], [], []
        for layer in hf.encoder.layers:
            sites.append(install_site(layer, "mlp"))
            a = layer.self_attn
            lora.append([a.q_proj, a.k_proj, a.v_proj, a.out_proj])
            blocks.append(CallBlock(layer, _call_no_mask))
        super().__init__(spec, blocks, sites, lora, hf.embeddings.position_embedding.weight,
                         final_norm=hf.final_layer_norm)  # no embedding LayerNorm in the text tower


def openai_to_hf(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """OpenAI ``clip/model.py`` text keys -> ``CLIPTextModel`` names (backbones.md §1.8)."""
    sd = dict(sd)
    for i in range(depth):
        for kind in ("weight", "bias"):
            src = f"transformer.resblocks.{i}.attn.in_proj_{kind}"
            if src in sd:
                split_qkv(sd, src, [f"encoder.layers.{i}.self_attn.{p}_proj.{kind}" for p in "qkv"])
    return rename(sd, [
        (r"token_embedding\.weight", "embeddings.token_embedding.weight"),
        (r"positional_embedding", "embeddings.position_embedding.weight"),
        (r"transformer\.resblocks\.(\d+)\.attn\.out_proj\.(\w+)", r"encoder.layers.\1.self_attn.out_proj.\2"),
        (r"transformer\.resblocks\.(\d+)\.ln_1\.(\w+)", r"encoder.layers.\1.layer_norm1.\2"),
        (r"transformer\.resblocks\.(\d+)\.ln_2\.(\w+)", r"encoder.layers.\1.layer_norm2.\2"),
        (r"transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(\w+)", r"encoder.layers.\1.mlp.fc1.\2"),
        (r"transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(\w+)", r"encoder.layers.\1.mlp.fc2.\2"),
        (r"ln_final\.(\w+)", r"final_layer_norm.\1"),
    ])


def openai_keys(sd: Tensors, cfg: Config) -> Tensors:
    return openai_to_hf(sd, cfg["num_hidden_layers"])


HF = HFFolder("CLIPTextModel", HF_UNUSED, ARCH_KEYS)
CLIP_TEXT = Family(construct=HF.construct, backbone=lambda spec, hf, cfg: CLIPTextBackbone(spec, hf),
                   formats=(HF, StateDictFile(openai_keys, OPENAI_UNUSED)))
build = CLIP_TEXT.build  # (spec, cfg, weights, device): any CLIP text tower, e.g. a checkpoint's tiny twin

build_clip_text = CLIP_TEXT.variant(CLIP_TEXT_SPEC, CLIP_L14_TEXT)
build_test_clip_text = CLIP_TEXT.variant(TEST_CLIP_TEXT_SPEC, TINY_TEXT, tiny=True)
