"""A RunSpec's model with its method attached: what a run trains (:mod:`peft3d.training`), ``bench params``
measures and the peft tuner probe tries. The method layer builds on the model layer, never the reverse."""
from __future__ import annotations

import torch

from peft3d.core.errors import ConfigError
from peft3d.core.spec import RunSpec
from peft3d.methods import METHODS
from peft3d.methods.base import Method
from peft3d.models.build import point_model
from peft3d.models.model import PointModel


def build_model(spec: RunSpec, num_classes: int, device: str = "cpu",
                attention: str | None = None) -> tuple[PointModel, Method]:
    """Returns ``(model, method)``: :func:`peft3d.models.build.point_model` (seeded by the spec, backbone
    frozen), then the method's ``attach`` with its validated config, which unfreezes what it trains.

    ``attention``: ``"sdpa"`` or ``"eager"`` in every block; ``None`` keeps the backbone's default (eager)."""
    model = point_model(spec, num_classes, device, attention)
    method = METHODS.get(spec.method)()
    if not model.backbone.blocks and method.config_cls.needs_blocks:  # grids refuse this at validate time already
        raise ConfigError(f"method {spec.method} needs transformer blocks and backbone {spec.backbone} runs with "
                          "none; fix: use a method that works without blocks (linear) or a backbone with blocks")
    cfg = method.config_cls.resolve(spec.method_cfg, None, where=f"method {spec.method}")
    with torch.device(device):
        method.attach(model, cfg)
    return model, method
