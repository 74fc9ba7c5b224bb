"""VPT-deep: each block sees [prefix tokens; P prompts of its own; point tokens]; the prompts it outputs
are discarded, so the next block's prompts replace them."""
from __future__ import annotations

import math

import torch
from torch import nn

from peft3d.methods.base import Method
from peft3d.methods.prompt.config import PromptConfig


class PromptBlock(nn.Module):
    def __init__(self, block: nn.Module, cfg: PromptConfig, width: int, context) -> None:
        super().__init__()
        self.block = block
        self.context = [context]  # a list: keep the shared context out of the module tree
        self.prompt_tokens = nn.Parameter(torch.empty(1, cfg.num_prompts, width))
        bound = math.sqrt(6.0 / (cfg.num_prompts + width))  # VPT's xavier-uniform init
        nn.init.uniform_(self.prompt_tokens, -bound, bound)
        self.prompt_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        n_pre, P = self.context[0].num_prefix, self.prompt_tokens.shape[1]
        prompts = self.prompt_dropout(self.prompt_tokens).expand(len(x), -1, -1)
        y = self.block(torch.cat([x[:, :n_pre], prompts, x[:, n_pre:]], dim=1))  # (B, T+P, D)
        return torch.cat([y[:, :n_pre], y[:, n_pre + P:]], dim=1)


class Prompt(Method):
    name, prefix, config_cls = "prompt", "prompt_", PromptConfig

    def attach(self, model, cfg: PromptConfig) -> None:
        blocks = model.backbone.blocks
        for i in range(len(blocks)):
            blocks[i] = PromptBlock(blocks[i], cfg, model.backbone.spec.width, model.context)
