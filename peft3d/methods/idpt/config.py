"""IDPT configuration (torch-free). docs/point_peft.md, section IDPT."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from peft3d.methods.base import MethodConfig


@dataclass(frozen=True)
class IDPTConfig(MethodConfig):
    """Instance-aware Dynamic Prompt Tuning (Zha et al., ICCV 2023). The prompt generator is a DGCNN over the
    point tokens: ``edge_convs`` EdgeConv layers (released 3) on the ``k`` nearest neighbours in feature space
    (released 20; fewer when a cloud has fewer tokens), then a fusing layer and a max over tokens.

    ``hidden``: the generator's width. ``None`` runs it at the backbone's width, as the paper and the released
    code do (about 9·D² parameters: 5.3 M at D = 768); a number projects the tokens down to that width first and
    the prompt back up after (2·D·hidden + 9·hidden², so the budget stays near the other methods'); a width at or
    above D runs the full-width generator. Default 128 (preset ``paper``: full width)."""

    hidden: int | None = 128
    k: int = 20
    edge_convs: int = 3

    presets: ClassVar[dict[str, dict[str, Any]]] = {"paper": {"hidden": None}}

    def __post_init__(self) -> None:
        if self.hidden is not None and self.hidden < 1:
            raise ValueError(f"hidden must be >= 1 or null (the backbone's width), got {self.hidden}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.edge_convs < 1:
            raise ValueError(f"edge_convs must be >= 1, got {self.edge_convs}")

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"hidden": trial.suggest_categorical("hidden", [32, 64, 128]),
                "k": trial.suggest_categorical("k", [10, 20])}
