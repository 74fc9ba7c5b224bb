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
            "plugins": installed_plugins(), "git_sha": git_sha(), "device": dev, "cpu": cpu(),
            "torch_threads": torch.get_num_threads()}


def cpu() -> str:
    """The processor and the instruction set torch's CPU kernels dispatch to, e.g. ``"Intel(R) Xeon(R) Processor,
    family 6 model 167 (torch kernels: AVX512)"``. Why recorded: the same code, seed, threads and library versions
    train bit-identically only on the same kind of CPU; another one (another instruction set, or another
    microarchitecture for which the math libraries pick other kernels) rounds differently, and training carries
    the last-bit difference into a different run. Family and model are kept because a virtual machine's model
    name is often generic."""
    import torch

    return f"{cpu_model()} (torch kernels: {torch.backends.cpu.get_cpu_capability()})"


def cpu_model() -> str:
    """``/proc/cpuinfo``'s model name with its family and model numbers (Linux), else what ``platform`` knows."""
    try:
        found = model_from_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        found = None
    return found or platform.processor() or platform.machine() or "unknown CPU"


def model_from_cpuinfo(text: str) -> str | None:
    """The first processor's ``model name, family F model M`` in a ``/proc/cpuinfo`` text (None without a name)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if not key.strip():
            break  # the first processor's block ends at its blank line
        fields.setdefault(key.strip(), value.strip())
    if "model name" not in fields:
        return None
    if {"cpu family", "model"} <= set(fields):
        return f"{fields['model name']}, family {fields['cpu family']} model {fields['model']}"
    return fields["model name"]


def installed_plugins() -> list[str]:
    """``"<distribution> <version>"`` of every installed peft3d plugin (docs/extending.md): a plugin's code can
    change what a run computes, so its version is part of the provenance like a dependency's."""
    from peft3d.core.plugins import GROUPS, entry_points

    return sorted({p.dist for kind in GROUPS for p in entry_points(kind)})
