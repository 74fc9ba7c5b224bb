from dataclasses import dataclass
from typing import Any

from peft3d.methods.base import MethodConfig


@dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """AdaptFormer (Chen et al., NeurIPS 2022): ``x + FFN(h) + scale * up(act(down(h)))`` with h the FFN
    input; the up projection starts at zero so training starts from the frozen function."""

    bottleneck: int = 64
    scale: float = 0.1
    dropout: float = 0.1
    act: str = "relu"

    def __post_init__(self) -> None:
        if self.bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {self.bottleneck}")
        if self.act not in ("relu", "gelu"):
            raise ValueError(f"act must be 'relu' or 'gelu', got {self.act!r}")

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"bottleneck": trial.suggest_categorical("bottleneck", [8, 16, 32, 64]),
                "scale": trial.suggest_float("scale", 0.01, 1.0, log=True)}
