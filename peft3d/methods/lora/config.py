from dataclasses import dataclass
from typing import Any

from peft3d.methods.base import MethodConfig


@dataclass(frozen=True)
class LoRAConfig(MethodConfig):
    """LoRA (Hu et al., ICLR 2022) through Hugging Face ``peft``. ``targets``: empty = every attention
    projection the backbone declares (``Backbone.lora_targets``); otherwise name suffixes within a block."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        r = trial.suggest_categorical("r", [4, 8, 16, 32])
        return {"r": r, "alpha": float(r * trial.suggest_categorical("alpha_ratio", [1, 2, 4]))}
