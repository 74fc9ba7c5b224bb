"""Writers of tiny checkpoints in each backbone's *original* format, with the original key names.

Each writer uses the tiny architecture of the matching ``test_*`` registry entry, so the family's real loader
(``peft3d.backbones.<family>.build(spec, tiny_cfg, "path:...", ...)``) reads it strictly.
"""
from __future__ import annotations

from pathlib import Path

import torch


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
    CLIPModel(CLIPConfig(text_config=TINY_TEXT, vision_config=vision, projection_dim=32)).save_pretrained(folder)
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
