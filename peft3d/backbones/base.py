"""The Backbone interface: a frozen pretrained transformer seen uniformly by every method.

Contract:
- ``blocks``: nn.ModuleList; each entry maps ``x (B, T, D) -> (B, T, D)``, bidirectional, no causal mask.
  Families whose own blocks need another call convention (CLIP's positional mask argument, ImageBind's
  sequence-first layout) are wrapped in a small adapter module here, so methods never special-case them.
- ``embed_norm``: what the pretrained embedding stage applies to tokens (post-LN families: their
  embedding LayerNorm, plus any constant added there); identity for pre-LN families.
- ``final_norm``: the encoder's final norm (identity for post-LN families, whose blocks end normalised).
- ``pos_table()``: the pretrained positional table (1D ``[L, D]`` or 2D ``[H, W, D]`` plus its canvas).
- ``ffn_site(i)``: the :class:`FFNSite` of block ``i``; methods add hooks there (adapters, Any2Point).
- ``lora_targets(i)``: module names inside ``blocks[i]`` that LoRA should wrap (the attention projections):
  the input projections first, the output projection last (DAPT relies on the order; a test checks it).
- ``ffn_targets(i)``: module names inside ``blocks[i]`` of the FFN's projections (up, then down), for
  tuners that adapt the FFN (IA3's feedforward modules, or any peft tuner with ``targets: ffn | all``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import nn

ATTENTION_IMPLS = ("eager", "sdpa")


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    modality: str  # "1d" | "2d": the shape of the positional table
    pretrain_modality: str  # "language" | "vision" | "audio" | "none"
    width: int
    depth: int
    heads: int
    family: str  # "pre_ln" | "post_ln"
    source: str  # default weights source (Hub id or file name)
    licence: str
    get_weights: str = ""  # one line telling the user how to obtain the weights


@dataclass
class PosTable:
    """A pretrained positional table without its special-token rows.

    1D: ``table`` is ``[L, D]``; row i is the embedding of sequence position i.
    2D: ``table`` is ``[H, W, D]`` in the patch grid's own layout (row = first image axis: y for images,
    frequency for spectrograms; column = x or time), ``canvas`` = (height_px, width_px) the grid covers and
    ``patch`` = (stride_y, stride_x) in pixels, so pixel (py, px) sits in cell (py // stride, px // stride).
    ``kernel``: the patch side in pixels where patches overlap (ImageBind audio: 16 px kernels at a 10 px
    stride); None when it equals the stride.
    """

    table: torch.Tensor
    canvas: tuple[int, int] | None = None
    patch: tuple[int, int] | None = None
    kernel: tuple[int, int] | None = None

    @property
    def ndim(self) -> int:
        return self.table.dim() - 1


class FFNHook(Protocol):
    def __call__(self, ffn_in: torch.Tensor, ffn_out: torch.Tensor) -> torch.Tensor: ...


class FFNSite(nn.Module):
    """Replaces a block's FFN (or the module that applies it) and lets methods add parallel branches.

    Each hook receives the FFN input and the FFN output that is about to join the residual stream
    (after layer scale where the family has one) and returns a delta added to that output.
    With no hooks the site is exactly the original computation.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hooks = nn.ModuleList()

    def add_hook(self, hook: nn.Module) -> None:
        self.hooks.append(hook)

    def apply_hooks(self, ffn_in: torch.Tensor, ffn_out: torch.Tensor) -> torch.Tensor:
        out = ffn_out
        for hook in self.hooks:
            out = out + hook(ffn_in, ffn_out)
        return out


class PreLNFFNSite(FFNSite):
    """For ``x + scale(mlp(norm(x)))`` blocks: wraps ``mlp`` (and the layer scale, if any, which is then
    replaced by identity in the block so it is applied exactly once)."""

    def __init__(self, mlp: nn.Module, scale: nn.Module | None = None) -> None:
        super().__init__()
        self.mlp = mlp
        self.scale = scale if scale is not None else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return self.apply_hooks(h, self.scale(self.mlp(h)))


class PostLNOutputSite(FFNSite):
    """For BERT-style ``LayerNorm(dropout(dense(intermediate)) + ffn_in)``: wraps the ``output`` module,
    whose forward receives both the intermediate activation and the FFN input."""

    def __init__(self, output: nn.Module) -> None:
        super().__init__()
        self.output = output  # has .dense, .dropout, .LayerNorm

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        f = self.output.dropout(self.output.dense(hidden_states))
        f = self.apply_hooks(input_tensor, f)
        return self.output.LayerNorm(f + input_tensor)


class CallBlock(nn.Module):
    """Gives a block with another call convention the uniform ``x -> x`` signature."""

    def __init__(self, block: nn.Module, call: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.block = block
        self._call = call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(self.block, x)


class Backbone(nn.Module):
    """Base class; subclasses fill ``blocks``, ``embed_norm``, ``final_norm`` and the accessors."""

    spec: BackboneSpec

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        self.spec = spec
        self.blocks = nn.ModuleList()
        self.embed_norm: nn.Module = nn.Identity()
        self.final_norm: nn.Module = nn.Identity()
        self.weights_info: dict[str, Any] = {"source": "random"}

    # -- accessors every family implements ------------------------------------------------------
    def pos_table(self) -> PosTable:
        raise NotImplementedError

    def ffn_site(self, i: int) -> FFNSite:
        raise NotImplementedError

    def lora_targets(self, i: int) -> list[str]:
        raise NotImplementedError

    def ffn_targets(self, i: int) -> list[str]:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def set_attention(self, impl: str) -> None:
        """``"sdpa"``: fused ``scaled_dot_product_attention`` in every block; ``"eager"``: the explicit
        softmax(QK^T)V path (the transformers and timm families' default: what the parity tests compare against;
        ImageBind's ``nn.MultiheadAttention`` has always run fused). Covers transformers
        models (their config's attention implementation, read at every forward), timm attention and
        ImageBind's blocks (both expose ``fused_attn``)."""
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {impl!r}")
        seen = 0
        for m in self.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = impl == "sdpa"
                seen += 1
            cfg = getattr(m, "config", None)
            if cfg is not None and hasattr(cfg, "_attn_implementation"):
                cfg._attn_implementation = impl
                seen += 1
        if not seen:
            raise NotImplementedError(f"{self.spec.name}: no attention module found to switch to {impl}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run all blocks then the final norm. ``x`` already passed through ``embed_norm``."""
        for blk in self.blocks:
            x = blk(x)
        return self.final_norm(x)


    def block_param_count(self) -> int:
        return sum(p.numel() for p in self.blocks.parameters())


def state_checksum(module: nn.Module) -> str:
    """sha256 over names, shapes, dtypes and bytes of every tensor in ``module.state_dict()`` (sorted)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        if t.device.type == "meta":
            return "meta"
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
