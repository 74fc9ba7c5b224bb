"""DAPT configuration (torch-free). docs/point_peft.md, section DAPT."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peft3d.methods.base import MethodConfig


@dataclass(frozen=True)
class DAPTConfig(MethodConfig):
    """Dynamic Adapter with internal Prompt Tuning (Zhou et al., "Dynamic Adapter Meets Prompt Tuning",
    CVPR 2024). ``bottleneck``: hidden width of each block's dynamic adapter (the released ``rank``, 64);
    ``dropout``: on the adapter's hidden activations (released ``drop_adapter_rate``, 0)."""

    bottleneck: int = 64
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {self.bottleneck}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"bottleneck": trial.suggest_categorical("bottleneck", [8, 16, 32, 64])}
