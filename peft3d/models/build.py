"""Build the model of a RunSpec up to its method: the backbone (with its weights), frozen, inside the shared
``PointModel`` (tokenizer, positional encoding, head). The method attaches on top of it
(:func:`peft3d.methods.build.build_model`): models know nothing of methods."""
from __future__ import annotations

import torch

from peft3d.backbones.controls import build_backbone
from peft3d.core.spec import RunSpec
from peft3d.models.model import PointModel


def point_model(spec: RunSpec, num_classes: int, device: str = "cpu", attention: str | None = None) -> PointModel:
    """The spec's model with its backbone frozen and no method. Seeds torch first, so random weights, the head
    and whatever a method initialises next follow the spec's seed.

    ``attention``: ``"sdpa"`` (fused ``scaled_dot_product_attention``) or ``"eager"`` (explicit softmax) in
    every block; ``None`` keeps the backbone's own default (eager)."""
    torch.manual_seed(spec.seed)
    backbone = build_backbone(spec.backbone, spec.weights, device=device, blocks=spec.pipeline.blocks)
    if attention is not None:
        backbone.set_attention(attention)
    blocks = backbone.block_param_count()
    with torch.device(device):
        model = PointModel(backbone, num_classes, spec.tokenizer, spec.head_hidden, spec.head_dropout,
                           spec.pipeline)
    model.freeze_backbone()
    model.pretrained_block_params = blocks  # before a method adds to the blocks (the parameter report)
    return model
