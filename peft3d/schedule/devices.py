"""Device slots: where each worker process of ``bench run`` runs.

``--devices cuda:0,cuda:1 [--per-device K]`` gives K slots per listed GPU, each worker pinned through
``CUDA_VISIBLE_DEVICES`` (it then sees one GPU, ``cuda``); ``auto`` is every visible GPU when the runs want
CUDA, else one single-threaded slot per CPU core; ``cpu`` is K CPU slots.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from peft3d.core.errors import ConfigError


@dataclass(frozen=True)
class Slot:
    name: str  # shown in the progress display: "cuda:0", "cuda:0#2", "cpu3"
    device: str | None = None  # the device the run uses inside the slot; None keeps the spec's
    threads: int = 1  # torch intra-op threads
    env: dict[str, str] = field(default_factory=dict)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (SLURM/cgroup cpusets), not the host's
    except AttributeError:
        return os.cpu_count() or 1


def cpu_slots(n: int) -> list[Slot]:
    n = max(1, n)
    threads = max(1, cores() // n)
    return [Slot(f"cpu{i}", None, threads) for i in range(n)]


def visible_gpus() -> list[str]:
    """Physical ids of the GPUs this process may use (``CUDA_VISIBLE_DEVICES`` honoured)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(ids: list[str], per_device: int) -> list[Slot]:
    threads = max(1, cores() // max(1, len(ids) * per_device))
    return [Slot(f"cuda:{d}" + (f"#{k}" if per_device > 1 else ""), "cuda", threads, {"CUDA_VISIBLE_DEVICES": d})
            for d in ids for k in range(per_device)]


def parse_devices(devices: str | None, per_device: int = 1, jobs: int = 0, want_cuda: bool = False) -> list[Slot]:
    """Slots for ``--devices``/``--per-device``/``--jobs`` (``jobs``: the older spelling, N CPU slots)."""
    if per_device < 1:
        raise ConfigError(f"--per-device must be >= 1, got {per_device}")
    if devices is None:
        if jobs > 0 and not want_cuda:
            return cpu_slots(jobs)
        devices = "auto"
    if devices == "auto":
        gpus = visible_gpus() if want_cuda else []
        if want_cuda and not gpus:
            raise ConfigError("the runs want CUDA but no GPU is visible: pass --device cpu or check "
                              "CUDA_VISIBLE_DEVICES / nvidia-smi")
        return gpu_slots(gpus, per_device) if gpus else cpu_slots(cores() * per_device)
    if devices == "cpu":
        return cpu_slots(per_device)
    ids = []
    for item in devices.split(","):
        item = item.strip()
        if not item.startswith("cuda:") or not item[5:].isdigit():
            raise ConfigError(f"--devices expects auto, cpu, or a list like cuda:0,cuda:1; got {item!r}")
        ids.append(item[5:])
    shown = os.environ.get("CUDA_VISIBLE_DEVICES")
    if shown is None:  # refuse up front what every run would fail on: a GPU this machine does not have
        n = len(visible_gpus())
        bad = [i for i in ids if int(i) >= n]
        if bad:
            have = f"only cuda:0..cuda:{n - 1}" if n else "no CUDA device (torch.cuda.device_count() is 0)"
            raise ConfigError(f"--devices cuda:{bad[0]}: this machine has {have}; fix: --devices auto or cpu, "
                              "or run on a machine with that GPU")
    else:  # cuda:N names the N-th visible GPU, as in torch
        vis = [d.strip() for d in shown.split(",") if d.strip()]
        bad = [i for i in ids if int(i) >= len(vis)]
        if bad:
            raise ConfigError(f"--devices cuda:{bad[0]}: only {len(vis)} GPU(s) visible (CUDA_VISIBLE_DEVICES="
                              f"{shown}); fix: name a visible GPU, or --devices auto or cpu")
        ids = [vis[int(i)] for i in ids]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"--devices lists a GPU twice ({devices}); use --per-device K for several runs per GPU")
    return gpu_slots(ids, per_device)
