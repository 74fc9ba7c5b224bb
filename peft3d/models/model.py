"""The one model every method trains: tokenizer -> positional encoding -> [cls] + tokens ->
embed norm -> frozen backbone blocks (as modified by the method) -> final norm -> head."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from peft3d.backbones.base import Backbone
from peft3d.core.spec import PipelineCfg, TokenizerCfg
from peft3d.models.positional import MLPPosEncoder, make_pos_encoder  # noqa: F401  (MLPPosEncoder: re-export)
from peft3d.models.tokenizer import PointTokenizer


@dataclass
class ForwardContext:
    """Per-forward facts that method modules deep inside the blocks need (set by ``PointModel.forward``).

    ``centres``: token centres ``(B, G, 3)``; ``num_prefix``: tokens before the point tokens in the
    sequence the blocks see (1: the cls token); ``cache``: per-forward scratch space for methods
    (e.g. projections computed once and reused by every block).
    """

    centres: torch.Tensor | None = None
    num_prefix: int = 1
    cache: dict[str, Any] = field(default_factory=dict)

    def reset(self, centres: torch.Tensor, num_prefix: int = 1) -> None:
        self.centres, self.num_prefix, self.cache = centres, num_prefix, {}


class Head(nn.Module):
    """cls ⊕ max-pool (2D) -> Linear -> BN -> ReLU -> Dropout -> Linear -> BN -> ReLU -> Dropout -> Linear.
    Without a cls token (``num_prefix=0``) the mean of the point tokens stands in for it."""

    def __init__(self, width: int, num_classes: int, hidden: int = 256, dropout: float = 0.5,
                 num_prefix: int = 1) -> None:
        super().__init__()
        self.num_prefix = num_prefix
        self.net = nn.Sequential(
            nn.Linear(2 * width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, C)
        points = x[:, self.num_prefix:]
        first = x[:, 0] if self.num_prefix else points.mean(dim=1)
        return self.net(torch.cat([first, points.amax(dim=1)], dim=-1))


class MeanHead(nn.Module):
    """Mean over the point tokens -> LayerNorm -> Linear (the usual linear-probe head of ViT / BERT work)."""

    def __init__(self, width: int, num_classes: int, num_prefix: int = 1) -> None:
        super().__init__()
        self.num_prefix = num_prefix
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, C)
        return self.fc(self.norm(x[:, self.num_prefix:].mean(dim=1)))


class PointModel(nn.Module):
    # Parameters outside the backbone that every method trains (the "shared" trainable group).
    SHARED = ("tokenizer", "pos_embed", "cls_token", "cls_pos", "backbone.final_norm")

    def __init__(self, backbone: Backbone, num_classes: int, tokenizer: TokenizerCfg,
                 head_hidden: int = 256, head_dropout: float = 0.5, pipeline: PipelineCfg | None = None) -> None:
        super().__init__()
        pipeline = pipeline or PipelineCfg()
        width = backbone.spec.width
        self.backbone = backbone
        self.tokenizer = PointTokenizer(tokenizer, width)
        self.pos_embed: nn.Module = make_pos_encoder(pipeline.pos_encoding, backbone, width)
        self.num_prefix = 1 if pipeline.cls_token else 0
        if pipeline.cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
            self.cls_pos = nn.Parameter(torch.zeros(1, 1, width))
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            nn.init.trunc_normal_(self.cls_pos, std=0.02)
        self.head = Head(width, num_classes, head_hidden, head_dropout, self.num_prefix) \
            if pipeline.head == "paper" else MeanHead(width, num_classes, self.num_prefix)
        self.context = ForwardContext()
        self.backbone_train_mode = False  # frozen backbone runs without dropout unless a method asks
        # The pretrained backbone's own dropout / drop-path modules, listed before any method attaches (a plain
        # list, not submodules): ``train()`` keeps only these in eval, so a method's own dropout still works.
        # (No backbone has stochastic depth: each is built with drop-path rate 0 or nn.Identity; a test checks.)
        self._pretrained_dropouts = [m for m in backbone.modules()
                                     if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d))]
        # Parameter-name prefix -> learning-rate multiplier; methods may set entries in ``attach`` (the longest
        # matching prefix wins; the final norm is shared by all methods and keeps the base lr).
        self.lr_scales: dict[str, float] = {}

    def lr_scale(self, name: str) -> float:
        if name.startswith("backbone.final_norm."):
            return 1.0
        hits = [p for p in self.lr_scales if name.startswith(p)]
        return self.lr_scales[max(hits, key=len)] if hits else 1.0

    def freeze_backbone(self) -> None:
        """Freeze every pretrained weight except the final norm (trained by all methods, as in Any2Point)."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        for p in self.backbone.final_norm.parameters():
            p.requires_grad_(True)

    def train(self, mode: bool = True) -> "PointModel":
        super().train(mode)
        if mode and not self.backbone_train_mode:
            for m in self._pretrained_dropouts:
                m.eval()
        return self

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:  # (B, N, 3) -> logits (B, C)
        tokens, centres = self.tokenizer(xyz)  # (B, G, D), (B, G, 3)
        self.context.reset(centres, num_prefix=self.num_prefix)
        x = tokens + self.pos_embed(centres)  # (B, G, D)
        if self.num_prefix:
            x = torch.cat([(self.cls_token + self.cls_pos).expand(len(xyz), -1, -1), x], dim=1)  # (B, 1+G, D)
        x = self.backbone(self.backbone.embed_norm(x))
        return self.head(x)


def param_groups(model: PointModel, prefix: str) -> dict[str, int]:
    """Trainable-parameter accounting, generic over methods (protocol.md "What counts as trainable").

    method: trainable parameters inside the backbone (adapters, LoRA, prompts, or the whole backbone for
    ``full``) or carrying the method's prefix anywhere; shared: tokenizer, positional encoding, cls, final
    norm; head: the classifier. ``trainable_excluding_head`` = method + shared.
    """
    method = shared = head = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        parts = name.split(".")
        if name.startswith("head."):
            head += p.numel()
        elif (name.startswith("backbone.") and not name.startswith("backbone.final_norm.")) or (
                prefix and any(part.startswith(prefix) for part in parts)):
            method += p.numel()
        else:
            shared += p.numel()
    total = sum(p.numel() for p in model.parameters())
    return {"method": method, "shared": shared, "trainable_excluding_head": method + shared, "head": head,
            "trainable": method + shared + head, "total": total,
            "blocks": getattr(model, "pretrained_block_params", model.backbone.block_param_count())}
