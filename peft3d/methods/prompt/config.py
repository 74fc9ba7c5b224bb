from dataclasses import dataclass
from typing import Any

from peft3d.methods.base import MethodConfig


@dataclass(frozen=True)
class PromptConfig(MethodConfig):
    """VPT-deep (Jia et al., ECCV 2022): ``num_prompts`` learnable tokens per block, replaced at each block."""

    num_prompts: int = 10
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1, got {self.num_prompts}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"num_prompts": trial.suggest_categorical("num_prompts", [5, 10, 20, 50])}
