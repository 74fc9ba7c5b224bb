"""DAPT (docs/point_peft.md): everything enters through ``attach``, on any backbone.

Per block ``i``: scale-shifts on what the attention's input projections read (the released position "after
norm1": the normalised input in pre-LN blocks, the block input in post-LN ones), on each input projection's
output (q, k, v or the fused qkv), on the attention output projection, on what the FFN reads (its first
projection and the adapter), on the FFN's two projections; the dynamic adapter at the block's FFN site; and
the internal prompt after the block (:class:`~.layers.DAPTBlock`). After the final norm, one more
scale-shift (:class:`~.layers.ScaledFinalNorm`). The projections are found through what the
backbone declares (``lora_targets``: input projections, then the output projection; ``ffn_targets``: up, then
down), never by name, and a fused ``nn.MultiheadAttention`` is first unfused into its four Linears (same
function) so its q, k, v outputs can be scaled.
"""
from __future__ import annotations

from torch import nn

from peft3d.core.errors import ConfigError
from peft3d.methods.base import Method
from peft3d.methods.peft_tuner.mha import unfuse

from .config import DAPTConfig
from .layers import AdapterTap, DAPTBlock, ScaledFinalNorm


def attention_projections(backbone, i: int) -> tuple[list[nn.Linear], nn.Linear]:
    """The Linears of block ``i``'s attention: its input projections (q, k, v, or one fused qkv) and its output
    projection, from ``backbone.lora_targets(i)`` (declared inputs first, output last)."""
    block = backbone.blocks[i]
    found: list[nn.Module] = []
    for name in backbone.lora_targets(i):
        module = block.get_submodule(name)
        if isinstance(module, nn.MultiheadAttention):
            u = unfuse(block, name)
            found += [u.q_proj, u.k_proj, u.v_proj, u.out_proj]
        else:
            found.append(module)
    if len(found) < 2 or not all(isinstance(m, nn.Linear) for m in found):
        raise ConfigError(f"dapt: block {i} of {backbone.spec.name} declares attention projections "
                          f"{[type(m).__name__ for m in found]}; dapt needs nn.Linear input and output projections")
    return found[:-1], found[-1]


class DAPT(Method):
    name, prefix, config_cls = "dapt", "dapt_", DAPTConfig

    def attach(self, model, cfg: DAPTConfig) -> None:
        bb = model.backbone
        depth = len(bb.blocks)
        wrapped = []
        for i in range(depth):  # before wrapping: some families find their FFN site through blocks[i]
            inputs, output = attention_projections(bb, i)
            fc1, fc2 = (bb.blocks[i].get_submodule(n) for n in bb.ffn_targets(i))
            widths = {"width": bb.spec.width, "qkv": [m.out_features for m in inputs],
                      "attn_out": output.out_features, "hidden": fc1.out_features}
            blk = DAPTBlock(bb.blocks[i], i, depth, widths, cfg.bottleneck, cfg.dropout, model.context)
            for m, shift in zip(inputs, blk.dapt_qkv, strict=True):
                m.register_forward_pre_hook(blk.dapt_attn_in.on_input)
                m.register_forward_hook(shift.on_output)
            output.register_forward_hook(blk.dapt_attn_out.on_output)
            fc1.register_forward_pre_hook(blk.dapt_ffn_in.on_input)
            fc1.register_forward_hook(blk.dapt_fc1.on_output)
            fc2.register_forward_hook(blk.dapt_fc2.on_output)
            bb.ffn_site(i).add_hook(AdapterTap(blk))
            wrapped.append(blk)
        for i, blk in enumerate(wrapped):
            bb.blocks[i] = blk
        bb.final_norm = ScaledFinalNorm(bb.final_norm, bb.spec.width)
