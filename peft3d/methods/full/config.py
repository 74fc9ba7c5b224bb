from dataclasses import dataclass
from typing import Any

from peft3d.methods.base import MethodConfig


@dataclass(frozen=True)
class FullConfig(MethodConfig):
    """Every pretrained weight trains (the reference PEFT methods try to approach).

    ``backbone_lr_scale`` multiplies the learning rate of the pretrained weights: the grid's lr is chosen for
    freshly initialised modules, and applied to a pretrained post-LN encoder it destroys it (measured on the
    quickstart: lr 3e-3 on all-MiniLM-L6-v2 gave chance accuracy, 8.3%)."""

    backbone_lr_scale: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.backbone_lr_scale <= 1:
            raise ValueError(f"backbone_lr_scale must lie in (0, 1], got {self.backbone_lr_scale}")

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"backbone_lr_scale": trial.suggest_float("backbone_lr_scale", 0.01, 1.0, log=True)}
