"""PointGST configuration (torch-free). docs/point_peft.md, section PointGST."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peft3d.methods.base import MethodConfig


@dataclass(frozen=True)
class PointGSTConfig(MethodConfig):
    """Point cloud Graph Spectral Tuning (Liang et al., "Parameter-Efficient Fine-Tuning in Spectral Domain for
    Point Cloud Learning", arXiv 2410.08114). ``rank``: width of the adapter's spectral domain (released 36);
    ``local_size``: centres per local graph, consecutive in Morton order (released 32); ``as_released``: the
    released code's transform ``U x`` (and back ``U^T``) instead of the graph Fourier transform ``U^T x`` (and
    back ``U``) the paper defines, with ``U`` the Laplacian's eigenvectors as columns."""

    rank: int = 36
    local_size: int = 32
    as_released: bool = False

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.local_size < 2:
            raise ValueError(f"local_size must be >= 2 (a graph of one centre has no edges), got {self.local_size}")

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"rank": trial.suggest_categorical("rank", [8, 16, 36, 64]),
                "local_size": trial.suggest_categorical("local_size", [16, 32])}
