"""A fused ``nn.MultiheadAttention`` as four ``nn.Linear`` projections, so that any peft tuner can adapt it.

``nn.MultiheadAttention`` keeps q, k and v in one bare parameter (``in_proj_weight``) and calls
``F.multi_head_attention_forward`` with ``out_proj.weight`` directly, never ``out_proj``'s forward: a tuner
that wraps ``out_proj`` is bypassed, and only peft's LoRA wraps the whole module. :class:`UnfusedMHA`
computes the same function (the same frozen weights, split; ``bias_k``/``bias_v`` appended to keys and
values as ``add_bias_kv`` does) through ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj`` modules.
torch has no such module (its own fast path is the fused one), hence this small one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    out, inp = weight.shape
    lin = nn.Linear(inp, out, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    lin.requires_grad_(weight.requires_grad)
    return lin


class UnfusedMHA(nn.Module):
    """Drop-in for a self-attention ``nn.MultiheadAttention`` (same embed dim for q, k, v; no masks, no
    ``add_zero_attn``); returns ``(output, None)`` as the original does with ``need_weights=False``."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.add_zero_attn:
            raise ValueError("UnfusedMHA supports attention with one embed dim for q, k, v and no add_zero_attn")
        e = mha.embed_dim
        w, b = mha.in_proj_weight, mha.in_proj_bias
        self.q_proj, self.k_proj, self.v_proj = (
            _linear(w[i * e:(i + 1) * e], None if b is None else b[i * e:(i + 1) * e]) for i in range(3))
        # a plain Linear copy: torch's NonDynamicallyQuantizableLinear subclass is refused by some tuners (GLoRA)
        self.out_proj = _linear(mha.out_proj.weight, mha.out_proj.bias)
        self.bias_k, self.bias_v = mha.bias_k, mha.bias_v  # (1, 1, E) or None
        self.heads, self.dropout, self.batch_first = mha.num_heads, mha.dropout, mha.batch_first

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask=None,
                need_weights: bool = False, attn_mask=None, **_) -> tuple[torch.Tensor, None]:
        if key_padding_mask is not None or attn_mask is not None or need_weights:
            raise NotImplementedError("UnfusedMHA: masks and attention weights are not supported")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)  # (B, L, E)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(len(k), 1, -1)], 1)
            v = torch.cat([v, self.bias_v.expand(len(v), 1, -1)], 1)
        B, L, E = q.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(B, t.shape[1], h, E // h).transpose(1, 2)

        o = F.scaled_dot_product_attention(split(q), split(k), split(v),
                                           dropout_p=self.dropout if self.training else 0.0)
        o = self.out_proj(o.transpose(1, 2).reshape(B, L, E))
        return (o if self.batch_first else o.transpose(0, 1)), None


def unfuse(parent: nn.Module, name: str) -> UnfusedMHA:
    """Replace the ``nn.MultiheadAttention`` at dotted ``name`` inside ``parent`` by its unfused twin."""
    *path, last = name.split(".")
    owner = parent.get_submodule(".".join(path)) if path else parent
    new = UnfusedMHA(getattr(owner, last))
    setattr(owner, last, new)
    return new
