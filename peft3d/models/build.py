"""Build the model of a RunSpec: backbone (with its weights), tokenizer, head, then the method's attach."""
from __future__ import annotations

import torch

from peft3d.backbones.controls import build_backbone
from peft3d.core.errors import ConfigError
from peft3d.core.spec import RunSpec
from peft3d.methods import METHODS
from peft3d.models.model import PointModel


def build_model(spec: RunSpec, num_classes: int, device: str = "cpu",
                attention: str | None = None) -> tuple[PointModel, object]:
    """Returns ``(model, method)``. Seeds torch so random weights and method init follow the spec's seed.

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
    method = METHODS.get(spec.method)()
    if not backbone.blocks and method.config_cls.needs_blocks:  # grids refuse this at validate time already
        raise ConfigError(f"method {spec.method} needs transformer blocks and backbone {spec.backbone} runs with "
                          "none; fix: use a method that works without blocks (linear) or a backbone with blocks")
    cfg = method.config_cls.resolve(spec.method_cfg, None, where=f"method {spec.method}")
    model.freeze_backbone()
    with torch.device(device):
        method.attach(model, cfg)
    model.pretrained_block_params = blocks
    return model, method
