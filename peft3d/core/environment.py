"""Provenance of a run: package versions, git SHA, device, threads (recorded in every result). In core so that
the training layer, which writes it, need not import the scheduler above it."""
from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# the libraries whose version can change a result (weights are read with safetensors and onnx)
PACKAGES = ("peft3d", "torch", "transformers", "timm", "peft", "safetensors", "onnx", "numpy", "optuna", "mlflow")


def git_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str) -> dict:
    import torch

    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    dev = device
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = f"{device} ({torch.cuda.get_device_name()})"
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
            "plugins": installed_plugins(), "git_sha": git_sha(), "device": dev,
            "torch_threads": torch.get_num_threads()}


def installed_plugins() -> list[str]:
    """``"<distribution> <version>"`` of every installed peft3d plugin (docs/extending.md): a plugin's code can
    change what a run computes, so its version is part of the provenance like a dependency's."""
    from peft3d.core.plugins import GROUPS, entry_points

    return sorted({p.dist for kind in GROUPS for p in entry_points(kind)})
