"""Any2Point configuration (torch-free: ``bench validate`` and ``bench ls presets`` import it).

Units, so that one preset means the same thing on every backbone (geometry that depends on the backbone —
canvas, patch grid, table length — is read from ``Backbone.pos_table()`` at attach time):

- ``cell_1d``: length of a 1D segment in rows of the backbone's positional table (paper: 2 rows of CLIP's
  77 -> 39 segments).
- ``cell_2d``: side of a 2D cell in patches of the backbone's grid. The released code gives pixels on its own
  canvas: DINOv2 26 px on the 518-px canvas of 14-px patches = 26/14 = 1.857 patches (20 x 20 cells);
  ImageBind 16 px on its 192 x 304 canvas of 16-px patches = 1 patch (12 x 19 cells, one per audio patch).
  On a PosTable with canvas (H, W) px and patch stride (sy, sx) a cell is ``cell_2d * sy`` x ``cell_2d * sx``
  px, i.e. ``ceil(rows / cell_2d)`` x ``ceil(cols / cell_2d)`` cells over the patch grid.
- ``camera_distance``: the released ``--trans`` with its sign dropped (the camera sits on each view axis at
  this distance from the origin, in point-cloud units; DINOv2-Scan 1.8, all others 1.4). The field of view
  (u, v) = (x/z, y/z) in [-1, 1]^2 fills the canvas (DINOv2: exactly the released ``(u + 1) * 518 / 2 - 0.5``
  mapping); see ``projection.py``.
- ``voxel``: 3D voxel edge in point-cloud units (CLIP-Scan 0.08, all others 0.16).

Variants: ``variant="fixed"`` (default) is the method as intended; ``variant="as_released"`` switches on every
behaviour of the released code listed in :data:`FLAGS`. Each flag can also be set on its own (``None`` = follow
the variant), so the harness can measure what each one does to the paper's numbers.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from peft3d.backbones import BACKBONES, declared
from peft3d.methods.base import MethodConfig

# Released-code behaviours (any2point.md §2, §3, §10). Each is a config field: None follows ``variant``.
FLAGS: dict[str, str] = {
    "batch_attention": "arm-only (a2p_arm_quirks; the CLIP text arm): the frozen blocks get (B, T, D) as "
                       "(seq, batch, feat), so every token position attends over the samples of the mini-batch, "
                       "not over tokens (§10.1)",
    "scrambled_pe": "2D: the [B*M, D, N] grid_sample output is reshaped to [B, M, N, D] without a permute, so a "
                    "token's 'encoding' is a slab of channels across all tokens of its view (§2.1 BUG)",
    "line_rotations": "1D: the six cube-view rotations of ONE direction (line_dir) instead of M distinct lines "
                      "(Scan: only 4 distinct axes, §2.2)",
    "wrap": "out-of-range projections wrap around (mod canvas / mod L) instead of clamping; 1D also uses the "
            "released mapping pos = s_norm * L - 0.5 (§2.1, §2.2)",
    "batch_rescale": "1D: positions rescaled by (L-1) / (max - min) taken over the WHOLE batch tensor (§2.2)",
    "lerp_quirk": "1D: weights (ceil - x, x - floor): a position on an exact integer gets a zero encoding (§2.2)",
    "released_canvas": "2D: the released pixel map px = (u+1) W/2 - 0.5, py = (v H/W + 1) H/2 - 0.5, canvas "
                       "corners aligned to the corner cells (grid_sample align_corners=True, zero padding), "
                       "cells in pixels from the canvas origin (§2.1)",
    "misshaped_grid": "arm-only (a2p_arm_quirks; the ImageBind audio arm): the (rows x cols) table read in the "
                      "transposed shape (12x19 read as 19x12, a row-major reshape; no-op for square grids) (§10.3)",
    "bn_empty_cells": "the per-view BatchNorm of pooled cells also counts every EMPTY cell of the fixed cell grid "
                      "(zeros from scatter_mean with dim_size = B x all cells) in its statistics (§3.6)",
}
# Flags that the released code had in one arm only: under ``as_released`` they are in force only on a backbone
# that declares them in its ``a2p_arm_quirks`` (peft3d/backbones/__init__.py); every other flag is generic.
ARM_ONLY = frozenset({"batch_attention", "misshaped_grid", "drop_bias_kv"})


@dataclass(frozen=True)
class Any2PointConfig(MethodConfig):
    """Any2Point (Tang et al., ECCV 2024; any2point.md): 3D-to-any virtual projection as the positional
    encoding, and in every block a bottleneck adapter on the FFN output plus the any-to-3D guided adapter
    (M local cell attentions, cell pooling, 3D-voxel-weighted ensemble). Defaults: the released DINOv2-Scan
    copy's module sizes; use a preset for a backbone x dataset."""

    # -- 3D-to-any virtual projection ------------------------------------------------------------------------
    views: int = 6  # M: 2D views (the first M of the six cube-face views) or 1D lines
    camera_distance: float = 1.4  # 2D: |--trans|
    line_dir: tuple[float, ...] = (-1.0, 0.0, 1.0)  # 1D with line_rotations: the released --pos_cor
    # -- bottleneck adapter on the FFN output: x + f + scale * up(dropout(QuickGELU(down(f)))) -------------
    bottleneck: int = 8  # r (adapter_dim)
    scale: float = 0.3  # scale_factor
    dropout: float = 0.1
    # -- guided local aggregation ---------------------------------------------------------------------------
    attn_dim: int = 12  # inner width of each local attention (q, k, v each attn_dim)
    attn_heads: int = 6
    cell_1d: float = 2.0  # table rows per segment
    cell_2d: float = 26 / 14  # patches per cell side
    pool: str = "mean"  # cell pooling: "mean" | "maxmean" (max + mean)
    voxel: float = 0.16  # 3D voxel edge
    coef: float = 0.5  # coef_pro: weight of the ensemble added to the tokens
    # -- variant and released-code flags (None = follow the variant) ---------------------------------------
    variant: str = "fixed"  # "fixed" | "as_released"
    batch_attention: bool | None = None
    scrambled_pe: bool | None = None
    line_rotations: bool | None = None
    wrap: bool | None = None
    batch_rescale: bool | None = None
    lerp_quirk: bool | None = None
    released_canvas: bool | None = None
    misshaped_grid: bool | None = None
    bn_empty_cells: bool | None = None

    def __post_init__(self) -> None:
        if self.views < 1:
            raise ValueError(f"views must be >= 1, got {self.views}")
        for name in ("bottleneck", "attn_dim", "attn_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.attn_dim % self.attn_heads:
            raise ValueError(f"attn_dim={self.attn_dim} must be divisible by attn_heads={self.attn_heads}")
        for name in ("camera_distance", "cell_1d", "cell_2d", "voxel"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.pool not in ("mean", "maxmean"):
            raise ValueError(f"pool must be 'mean' or 'maxmean', got {self.pool!r}")
        if self.variant not in ("fixed", "as_released"):
            raise ValueError(f"variant must be 'fixed' or 'as_released', got {self.variant!r}")
        if len(self.line_dir) != 3 or not any(self.line_dir):
            raise ValueError(f"line_dir must be a non-zero 3-vector, got {self.line_dir}")
        for name in FLAGS:
            if getattr(self, name) not in (None, True, False):
                raise ValueError(f"{name} must be true, false or null, got {getattr(self, name)!r}")

    def flags(self, arm_quirks: Iterable[str] = ()) -> dict[str, bool]:
        """The released-code behaviours in force on a backbone whose released arm had ``arm_quirks`` (what the
        backbone declares as ``a2p_arm_quirks``)."""
        quirks = set(arm_quirks)
        out = {}
        for name in FLAGS:
            explicit = getattr(self, name)
            if explicit is not None:
                out[name] = explicit
            else:
                out[name] = self.variant == "as_released" and (name not in ARM_ONLY or name in quirks)
        return out

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        return {"bottleneck": trial.suggest_categorical("bottleneck", [4, 8, 16, 32]),
                "coef": trial.suggest_float("coef", 0.05, 1.0, log=True),
                "scale": trial.suggest_float("scale", 0.1, 1.0, log=True)}


# -- presets ------------------------------------------------------------------------------------------------
# The released scripts' settings (any2point.md §3 table). Tokenizer k (81 / 64) and group normalisation are
# tokenizer settings, set in the paper_any2point grids, not here.
PAPER: dict[str, dict[str, Any]] = {
    "paper_clip_text_scan": dict(bottleneck=16, scale=0.3, coef=0.3, cell_1d=2.0, voxel=0.08,
                                 line_dir=(-1.0, 0.0, 1.0), pool="mean"),
    "paper_clip_text_mn40": dict(bottleneck=16, scale=0.3, coef=0.5, cell_1d=2.0, voxel=0.16,
                                 line_dir=(1.0, -1.0, 0.0), pool="mean"),
    "paper_dinov2_scan": dict(bottleneck=8, scale=0.3, coef=0.7, cell_2d=26 / 14, voxel=0.16,
                              camera_distance=1.8, pool="mean"),
    "paper_dinov2_mn40": dict(bottleneck=8, scale=1.0, coef=0.1, cell_2d=26 / 14, voxel=0.16,
                              camera_distance=1.4, pool="maxmean"),
    "paper_imagebind_audio_scan": dict(bottleneck=8, scale=0.3, coef=0.5, cell_2d=1.0, voxel=0.16,
                                       camera_distance=1.4, pool="mean"),
    "paper_imagebind_audio_mn40": dict(bottleneck=8, scale=1.0, coef=0.1, cell_2d=1.0, voxel=0.16,
                                       camera_distance=1.4, pool="maxmean"),
}

PRESET_DOCS: dict[str, str] = {
    "paper_clip_text_scan": "Any2Point_CLIP_Lang/fine_tune.sh: r 16, scale 0.3, coef 0.3, 1D cell 2, voxel 0.08, "
                            "pos_cor (-1,0,1), mean pooling (tokenizer k 81). 0.95M trainable without the head.",
    "paper_clip_text_mn40": "Any2Point_clip_lang_modelnet: r 16, scale 0.3, coef 0.5, cell 2, voxel 0.16, "
                            "pos_cor (1,-1,0), mean pooling (tokenizer k 64, group norm std).",
    "paper_dinov2_scan": "Any2Point_DINOV2_Vision: r 8, scale 0.3, coef 0.7, cell 26 px / 14 px patches, voxel 0.16, "
                         "trans -1.8, mean pooling (tokenizer k 64). 0.80M trainable without the head.",
    "paper_dinov2_mn40": "Any2Point_DINOV2_modelnet: r 8, scale 1.0, coef 0.1, cell 26 px, voxel 0.16, trans -1.4, "
                         "max+mean pooling (tokenizer k 81, group norm std).",
    "paper_imagebind_audio_scan": "Any2Point_ImageBind_audio: scale 0.3, coef 0.5, cell 16 px = 1 audio patch, "
                                  "voxel 0.16, trans -1.4, mean pooling (tokenizer k 64). r = 8, NOT the 12 of "
                                  "its fine_tune.sh (which overrides the yaml's 8): the paper reports 0.8M "
                                  "trainable parameters, which r = 8 gives (802,296 here) and r = 12 does not "
                                  "(876,072; any2point.md §4, §10.10).",
    "paper_imagebind_audio_mn40": "Any2Point_ImageBind_Modelnet: r 8, scale 1.0, coef 0.1, cell 16 px = 1 patch, "
                                  "voxel 0.16, trans -1.4, max+mean pooling (tokenizer k 81, group norm std).",
}

# -- presets from what a backbone declares ---------------------------------------------------------------------
# ``<backbone>_<tag>`` reuses the paper preset of the released arm the backbone declares (``a2p_settings``).
# Cells keep the released cells' share of the positional table: a 1D segment is 2 of CLIP's 77 rows (39
# segments), a 2D cell of the DINOv2 arm 26 px of its 518 px canvas (20 x 20 cells over its 37 x 37 patches);
# the ImageBind arm's cell is one patch, whatever the grid. ``pos_shape`` (declared by the backbone) gives the
# rows; a backbone that declares none keeps the arm's cells as they are.
ARM_GEOMETRY: dict[str, dict[str, Any]] = {
    "clip_text": {"field": "cell_1d", "rows": 77, "digits": 2},
    "dinov2": {"field": "cell_2d", "rows": 37, "digits": 3},
    "imagebind_audio": {"field": "cell_2d", "rows": None, "digits": None},
}
TAGS = {"scan": "scan", "mn40": "mn40", "synthetic": "scan"}  # preset tag -> paper tag (synthetic scans: Scan)
TINY_BOTTLENECK = 4  # tiny test backbones (``test=True``): the arm's settings with a small bottleneck
DEFAULT_ARM = {"1d": "clip_text", "2d": "dinov2"}  # a backbone that declares no arm: by its table's modality


def backbone_presets(backbone: str) -> dict[str, dict[str, Any]]:
    """``{"<backbone>_<tag>": settings}`` for one registered backbone, from what it declares."""
    meta = BACKBONES.meta(backbone)
    arm = declared(backbone, "a2p_settings") or DEFAULT_ARM[meta.get("modality", "1d")]
    geometry, rows = ARM_GEOMETRY[arm], (declared(backbone, "pos_shape") or (None,))[0]
    out = {}
    for tag, paper_tag in TAGS.items():
        cfg = dict(PAPER[f"paper_{arm}_{paper_tag}"])
        if geometry["rows"] and rows and rows != geometry["rows"]:
            field = geometry["field"]
            cfg[field] = round(cfg[field] * rows / geometry["rows"], geometry["digits"])
        if meta.get("test"):
            cfg["bottleneck"] = TINY_BOTTLENECK
        out[f"{backbone}_{tag}"] = cfg
    return out


class _Presets(Mapping):
    """The paper presets plus every registered backbone's, computed on each look-up so that a backbone
    registered after import gets its presets too."""

    def _all(self) -> dict[str, dict[str, Any]]:
        out = dict(PAPER)
        for backbone in BACKBONES.names():
            out.update(backbone_presets(backbone))
        return out

    def __getitem__(self, name: str) -> dict[str, Any]:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


Any2PointConfig.presets = _Presets()
