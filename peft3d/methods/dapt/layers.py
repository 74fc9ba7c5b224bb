"""DAPT's modules: the per-channel scale-and-shift, the dynamic adapter and the block that adds internal prompts."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class ScaleShift(nn.Module):
    """``x * gamma + beta`` over the last dimension (SSF-style; released init: gamma ~ N(1, 0.02), beta ~
    N(0, 0.02)). Used directly, or as a forward hook on a frozen ``nn.Linear`` (:meth:`on_input` scales what
    the projection reads, :meth:`on_output` what it returns): the frozen module is left in place, so every
    family's own attention and FFN code runs unchanged."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(dim))
        self.beta = nn.Parameter(torch.empty(dim))
        nn.init.normal_(self.gamma, mean=1.0, std=0.02)
        nn.init.normal_(self.beta, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.beta

    def on_input(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (self(args[0]), *args[1:])

    def on_output(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        return self(output)


class DynamicAdapter(nn.Module):
    """``up(dropout(GELU(down(z)))) * ReLU(gate(z))`` with ``z = LayerNorm(h)``: a bottleneck whose output is
    scaled per token by a learned, non-negative function of that token. ``up`` starts at zero, so the block
    starts as the (scale-shifted) frozen function; a token whose gate is zero gets no adapter output at all."""

    def __init__(self, width: int, bottleneck: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.gate = nn.Linear(width, 1)
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        self.dropout = nn.Dropout(dropout)
        for lin in (self.down, self.gate):  # the released init
            nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5))
            nn.init.zeros_(lin.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def token_scale(self, z: torch.Tensor) -> torch.Tensor:  # (B, T, D) normalised -> (B, T, 1)
        return F.relu(self.gate(z))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        z = self.norm(h)
        return self.up(self.dropout(F.gelu(self.down(z)))) * self.token_scale(z)


class AdapterTap(nn.Module):
    """The FFN-site hook of one DAPT block: hands the FFN input to the block's adapter and returns its output
    (added to the FFN output by the site). Holds its block in a list: the adapter's parameters live once, in
    the block."""

    def __init__(self, owner: "DAPTBlock") -> None:
        super().__init__()
        self._owner = [owner]

    def forward(self, ffn_in: torch.Tensor, ffn_out: torch.Tensor) -> torch.Tensor:
        return self._owner[0].adapter_branch(ffn_in)


class DAPTBlock(nn.Module):
    """Wraps ``backbone.blocks[i]``. Owns the block's scale-shifts (the hooks on its frozen projections read
    them), its dynamic adapter and the scale-shift of the prompt it emits.

    Sequence layout: ``[prefix (context.num_prefix); prompts; point tokens]``. Block ``i`` receives the ``i``
    prompts the blocks before it added (newest first, right after the prefix), runs, then inserts its own:
    ``ScaleShift(mean over tokens of GELU(adapter output))``. The last block emits none and removes all of
    them, so the final norm and the shared head see ``[prefix; points]`` as with every other method."""

    def __init__(self, block: nn.Module, index: int, depth: int, widths: dict[str, Any], bottleneck: int,
                 dropout: float, context: Any) -> None:
        super().__init__()
        self.block = block
        width = widths["width"]
        self.dapt_attn_in = ScaleShift(width)
        self.dapt_qkv = nn.ModuleList(ScaleShift(w) for w in widths["qkv"])
        self.dapt_attn_out = ScaleShift(widths["attn_out"])
        self.dapt_ffn_in = ScaleShift(width)
        self.dapt_fc1 = ScaleShift(widths["hidden"])
        self.dapt_fc2 = ScaleShift(width)
        self.dapt_adapter = DynamicAdapter(width, bottleneck, dropout)
        self.last = index == depth - 1
        self.dapt_prompt = None if self.last else ScaleShift(width)
        self.prompts_in = index  # prompts present in this block's input
        self._context = [context]
        self._adapter_out: torch.Tensor | None = None

    def adapter_branch(self, ffn_in: torch.Tensor) -> torch.Tensor:
        out = self.dapt_adapter(self.dapt_ffn_in(ffn_in))
        self._adapter_out = out
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T + 1, D); last: (B, T - i, D)
        n = self._context[0].num_prefix
        y = self.block(x)
        activations, self._adapter_out = self._adapter_out, None
        if activations is None:
            raise RuntimeError("dapt: the block ran without calling its FFN site (the adapter never saw the tokens)")
        if self.last:
            return torch.cat([y[:, :n], y[:, n + self.prompts_in:]], dim=1)
        prompt = self.dapt_prompt(F.gelu(activations).mean(dim=1, keepdim=True))  # (B, 1, D)
        return torch.cat([y[:, :n], prompt, y[:, n:]], dim=1)


class ScaledFinalNorm(nn.Module):
    """The backbone's final norm followed by DAPT's output scale-shift (the released one after the encoder's
    norm). The norm keeps its place in the shared group (``backbone.final_norm.norm``); ``dapt_out`` counts as
    the method's."""

    def __init__(self, norm: nn.Module, width: int) -> None:
        super().__init__()
        self.norm = norm
        self.dapt_out = ScaleShift(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dapt_out(self.norm(x))
