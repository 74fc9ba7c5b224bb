from peft3d.methods.base import Method
from peft3d.methods.full.config import FullConfig


class Full(Method):
    """Full fine-tuning: unfreeze the whole backbone (at ``backbone_lr_scale`` times the grid's lr)."""

    name, prefix, config_cls, trains_backbone = "full", "", FullConfig, True

    def attach(self, model, cfg: FullConfig) -> None:
        for p in model.backbone.parameters():
            p.requires_grad_(True)
        model.lr_scales["backbone."] = cfg.backbone_lr_scale
