"""Any2Point (any2point.md): everything enters through ``attach``.

- ``model.pos_embed`` becomes the :class:`VirtualProjection` (reads the backbone's frozen table; no weights).
  The encoding is added once, at the input (the paper's T_in = T + mean_j PE(p_j); the released copies add it
  once, before every block, or twice at block 1 — any2point.md §1.2, §10.4).
- Every block's FFN site gets the bottleneck adapter (inside the backbone: counted as method parameters).
- Every block is wrapped in a :class:`GuidedBlock`; the shared local attentions and the per-block
  BatchNorms live at model level in ``model.a2p_guided``.
- ``model.a2p_flags`` records the released-code behaviours in force (``Any2PointConfig.flags``).
"""
from __future__ import annotations

from peft3d.backbones import declared
from peft3d.methods.any2point.config import Any2PointConfig
from peft3d.methods.any2point.layers import BottleneckAdapter, GuidedAggregation, GuidedBlock
from peft3d.methods.any2point.projection import VirtualProjection
from peft3d.methods.base import Method


class Any2Point(Method):
    name, prefix, config_cls = "any2point", "a2p_", Any2PointConfig

    def attach(self, model, cfg: Any2PointConfig) -> None:
        bb = model.backbone
        flags = cfg.flags(declared(bb.spec.name, "a2p_arm_quirks", ()))
        projection = VirtualProjection(bb, cfg, flags, model.context)
        model.pos_embed = projection
        width, depth = bb.spec.width, len(bb.blocks)
        for i in range(depth):  # before wrapping: some families find their FFN site through blocks[i]
            bb.ffn_site(i).add_hook(BottleneckAdapter(width, cfg))
        model.a2p_guided = GuidedAggregation(width, depth, cfg, projection)
        for i in range(depth):
            bb.blocks[i] = GuidedBlock(bb.blocks[i], i, model.a2p_guided, model.context, flags["batch_attention"])
        model.a2p_flags = flags
