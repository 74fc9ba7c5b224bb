from __future__ import annotations

import torch
from torch import nn

from peft3d.methods.adapter.config import AdapterConfig
from peft3d.methods.base import Method


class ParallelAdapter(nn.Module):
    """FFN-site hook: returns ``scale * up(act(down(ffn_in)))`` (added to the FFN output by the site)."""

    def __init__(self, width: int, cfg: AdapterConfig) -> None:
        super().__init__()
        self.adapter_down = nn.Linear(width, cfg.bottleneck)
        self.adapter_act = nn.ReLU() if cfg.act == "relu" else nn.GELU()
        self.adapter_dropout = nn.Dropout(cfg.dropout)
        self.adapter_up = nn.Linear(cfg.bottleneck, width)
        self.scale = cfg.scale
        nn.init.kaiming_uniform_(self.adapter_down.weight, a=5**0.5)
        nn.init.zeros_(self.adapter_down.bias)
        nn.init.zeros_(self.adapter_up.weight)
        nn.init.zeros_(self.adapter_up.bias)

    def forward(self, ffn_in: torch.Tensor, ffn_out: torch.Tensor) -> torch.Tensor:
        return self.scale * self.adapter_up(self.adapter_dropout(self.adapter_act(self.adapter_down(ffn_in))))


class Adapter(Method):
    name, prefix, config_cls = "adapter", "adapter_", AdapterConfig

    def attach(self, model, cfg: AdapterConfig) -> None:
        bb = model.backbone
        for i in range(len(bb.blocks)):
            bb.ffn_site(i).add_hook(ParallelAdapter(bb.spec.width, cfg))
