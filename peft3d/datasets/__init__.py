"""Dataset registry. A grid names ``family`` or ``family/variant`` (e.g. ``scanobjectnn/pb_t50_rs``)."""
from peft3d.registry import Registry

DATASETS = Registry("dataset")
DATASETS.register("synthetic", "peft3d.datasets.synthetic:Synthetic", variants=("clean", "scan"), classes=12,
                  default_variant="scan", needs_root=False,
                  summary="deterministic synthetic shapes (embedded default); scan = rotated, occluded, cluttered")


def split_name(name: str) -> tuple[str, str | None]:
    """``'scanobjectnn/pb_t50_rs'`` -> ``('scanobjectnn', 'pb_t50_rs')``; ``'modelnet40'`` -> (..., None)."""
    family, _, variant = name.partition("/")
    return family, (variant or None)
