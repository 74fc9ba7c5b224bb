"""imagebind_audio: the audio trunk of ImageBind-Huge (backbones.md §5), re-implemented under the original
key names so ``imagebind_huge.pth`` loads strictly (its audio keys; the other five modalities are
allow-listed).

Fidelity notes:
- Attention is ``nn.MultiheadAttention(768, 12, bias=True, add_bias_kv=True, batch_first=True)``: the learned
  ``bias_k``/``bias_v`` token is **kept** (L queries attend to L+1 keys, as in ImageBind). The released
  Any2Point code loaded these weights with ``strict=False`` into a timm block and silently dropped
  ``bias_k``/``bias_v``; that variant is not reproduced here. ``batch_first=True`` replaces ImageBind's
  sequence-first layout (same weights, identical outputs on ``[B, L, D]``; §5.3).
- Drop path is 0 in every block (ImageBind trains with linspace(0, 0.1)); a frozen backbone runs in eval
  anyway (``PointModel.train``), and zero rates keep ``full`` fine-tuning deterministic too.
- ``embed_norm`` is identity: the stem LayerNorm (eps 1e-5) normalises spectrogram patch tokens *before*
  the cls concat and the positional add, so applying it to ``[cls; tokens + pos]`` would not reproduce
  pretraining either; point tokens arrive normalised by the tokenizer, as for the other pre-LN families (and
  as in Any2Point, which drops the conv stem). The stem is loaded (strictness) and then discarded.
- LoRA targets ``attn``: peft wraps the whole ``nn.MultiheadAttention`` (``lora.MultiheadAttention``:
  LoRA on the fused in_proj, A [r, D], B [3D, r], and on out_proj), which keeps bias_k/bias_v untouched.
- Positional table: 12 (frequency) x 19 (time) cells of the 1 x 128 x 204 mel canvas; the stem is a 16 x 16
  kernel with stride 10, so ``PosTable.patch = (10, 10)`` is the stride (cells overlap by 6 px).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peft3d.backbones.base import BackboneSpec
from peft3d.backbones.loading import Config, Family, StateDictFile
from peft3d.backbones.preln import PreLNBackbone, grid_table, install_site

IMAGEBIND_AUDIO = {"width": 768, "depth": 12, "heads": 12, "mlp_hidden": 3072, "canvas": (128, 204),
                   "kernel": 16, "stride": 10, "out_dim": 1024}
TINY_AUDIO = {"width": 32, "depth": 2, "heads": 2, "mlp_hidden": 128, "canvas": (46, 56), "kernel": 16,
              "stride": 10, "out_dim": 16}  # 4 x 5 grid
HOW = ("put imagebind_huge.pth from https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth "
       "(CC-BY-NC 4.0) in "
       "$PEFT3D_WEIGHTS (default ./weights) or ./.checkpoints, or pass weights: path:/file.pth")
OTHER_MODALITIES = ("vision", "text", "depth", "thermal", "imu")
NOTES = ("bias_k/bias_v kept (Any2Point's released code dropped them); drop path zeroed; stem LayerNorm not "
         "applied to point tokens (embed_norm = identity)")

IMAGEBIND_AUDIO_SPEC = BackboneSpec(
    name="imagebind_audio", modality="2d", pretrain_modality="audio", width=768, depth=12, heads=12,
    family="pre_ln", source="imagebind_huge.pth (audio trunk)", licence="cc-by-nc-4.0", get_weights=HOW)
TEST_IMAGEBIND_AUDIO_SPEC = BackboneSpec(
    name="test_imagebind_audio", modality="2d", pretrain_modality="none", width=32, depth=2, heads=2,
    family="pre_ln", source="random (tiny test model)", licence="n/a", get_weights="always random")


class Mlp(nn.Module):
    """ImageBind's ``Mlp``: fc1 -> GELU -> dropout -> fc2 -> dropout (dropout 0)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act = nn.Linear(dim, hidden), nn.GELU()
        self.fc2, self.drop = nn.Linear(hidden, dim), nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class BlockWithMasking(nn.Module):
    """ImageBind's block, batch-first: x + attn(norm_1(x)), then x + mlp(norm_2(x)); no layer scale in
    the audio trunk."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=True, batch_first=True)
        self.drop_path = nn.Identity()  # ImageBind: DropPath(linspace(0, 0.1)); zeroed, see module notes
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)
        # True: torch's fused scaled_dot_product_attention (bias_k/bias_v are appended to the keys/values
        # first, so numerics are kept); False: the explicit softmax path, which asking for the weights forces.
        self.fused_attn = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        h = self.norm_1(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=not self.fused_attn)[0])
        return x + self.drop_path(self.mlp(self.norm_2(x)))


class _Stem(nn.Module):
    def __init__(self, dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=kernel, stride=stride, bias=False)
        self.norm_layer = nn.LayerNorm(dim, eps=1e-5)


class _PosHelper(nn.Module):
    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, rows, dim))


class _Preprocessor(nn.Module):
    def __init__(self, dim: int, grid: tuple[int, int], kernel: int, stride: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.rgbt_stem = _Stem(dim, kernel, stride)
        self.pos_embedding_helper = _PosHelper(1 + grid[0] * grid[1], dim)


class _Trunk(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[BlockWithMasking(cfg["width"], cfg["heads"], cfg["mlp_hidden"])
                                      for _ in range(cfg["depth"])])


class _SelectCls(nn.Module):  # ImageBind's SelectElement(index=0): parameter-free
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def grid_of(cfg: dict[str, Any]) -> tuple[int, int]:
    (h, w), k, s = cfg["canvas"], cfg["kernel"], cfg["stride"]
    return (h - k) // s + 1, (w - k) // s + 1


class ImageBindAudio(nn.Module):
    """The audio parts of ``imagebind_model.ImageBindModel`` with its state-dict names (§5.8)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        d = cfg["width"]
        self.modality_preprocessors = nn.ModuleDict(
            {"audio": _Preprocessor(d, grid_of(cfg), cfg["kernel"], cfg["stride"])})
        self.modality_trunks = nn.ModuleDict({"audio": _Trunk(cfg)})
        self.modality_heads = nn.ModuleDict({"audio": nn.Sequential(
            nn.LayerNorm(d, eps=1e-6), _SelectCls(), nn.Linear(d, cfg["out_dim"], bias=False))})


def unused_key(k: str) -> bool:
    """Keys of ``imagebind_huge.pth`` this backbone does not use: the other modalities and the audio
    postprocessor (a fixed logit scale)."""
    parts = k.split(".")
    return (len(parts) > 2 and parts[0].startswith("modality_") and parts[1] in OTHER_MODALITIES) or \
        k.startswith("modality_postprocessors.audio.")


class ImageBindAudioBackbone(PreLNBackbone):
    def __init__(self, spec: BackboneSpec, model: ImageBindAudio, cfg: dict[str, Any]) -> None:
        blocks = list(model.modality_trunks["audio"].blocks)
        sites = [install_site(b, "mlp") for b in blocks]
        pos = model.modality_preprocessors["audio"].pos_embedding_helper.pos_embed
        super().__init__(spec, blocks, sites, [[b.attn] for b in blocks], grid_table(pos, 1, grid_of(cfg)),
                         final_norm=model.modality_heads["audio"][0], canvas=tuple(cfg["canvas"]),
                         patch=(cfg["stride"], cfg["stride"]), kernel=(cfg["kernel"], cfg["kernel"]))


def _init(model: ImageBindAudio) -> None:
    """Random init in ImageBind's style: truncated normal (std 0.02) tables and Linears, unit LayerNorms."""
    pre = model.modality_preprocessors["audio"]
    nn.init.trunc_normal_(pre.cls_token, std=0.02)
    nn.init.trunc_normal_(pre.pos_embedding_helper.pos_embed, std=0.02)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.MultiheadAttention):
            nn.init.normal_(m.bias_k, std=0.02)
            nn.init.normal_(m.bias_v, std=0.02)


def construct(cfg: Config, device: str) -> ImageBindAudio:
    with torch.device(device):
        return ImageBindAudio(cfg)


# Attention: ImageBind's nn.MultiheadAttention has always run fused (sdpa), which keeps its numerics.
IMAGEBIND = Family(construct=construct, backbone=ImageBindAudioBackbone, formats=(StateDictFile(unused=unused_key),),
                   attention="sdpa", init=_init, notes=NOTES)
build = IMAGEBIND.build  # (spec, cfg, weights, device)

build_imagebind_audio = IMAGEBIND.variant(IMAGEBIND_AUDIO_SPEC, IMAGEBIND_AUDIO)
build_test_imagebind_audio = IMAGEBIND.variant(TEST_IMAGEBIND_AUDIO_SPEC, TINY_AUDIO, tiny=True)
