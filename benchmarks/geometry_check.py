"""The geometry backends side by side on one device: the compiled kernel (torch-fps: Triton on CUDA, C++ on the
CPU) against the vectorised PyTorch loop, on the tokenizer's stages at a given size. Prints one JSON object:
per stage, median ms of each backend, whether the FPS picks are identical and the share of neighbour sets that
agree (they differ only on exactly equal distances), and the backend name a result would record.

    PYTHONPATH=. python benchmarks/geometry_check.py --device cuda --batch 32 --points 1024 --k 64
    PYTHONPATH=. python benchmarks/geometry_check.py --device cpu --batch 16 --points 1024 --k 64

On the CPU the first call builds torch-fps's C++ extension (cached in ~/.cache/torch_extensions); on CUDA,
Triton compiles its kernel at first use (cached in ~/.triton). Both compile times are reported.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from peft3d.models import geometry


def timed_ms(fn, device: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def stage(xyz: torch.Tensor, k: int, device: str, repeats: int) -> dict:
    n = xyz.shape[1] // 2
    os.environ["PEFT3D_GEOMETRY"] = "compiled"
    t0 = time.perf_counter()
    c_fast, nb_fast, _ = geometry.sample_and_group(xyz, n, k)  # first call: includes any compile
    first_ms = 1000 * (time.perf_counter() - t0)
    fast_ms = timed_ms(lambda: geometry.sample_and_group(xyz, n, k), device, repeats)
    os.environ["PEFT3D_GEOMETRY"] = "torch"
    c_ref, nb_ref, _ = geometry.sample_and_group(xyz, n, k)
    ref_ms = timed_ms(lambda: geometry.sample_and_group(xyz, n, k), device, repeats)
    same_sets = (nb_fast.sort(-1).values == nb_ref.sort(-1).values).all(-1).float().mean().item()
    return {"points": xyz.shape[1], "compiled_first_call_ms": round(first_ms, 1), "compiled_ms": round(fast_ms, 3),
            "torch_ms": round(ref_ms, 3), "fps_identical": bool(torch.equal(c_fast, c_ref)),
            "knn_sets_identical_share": round(same_sets, 6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    xyz = (torch.rand(a.batch, a.points, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(a.device)
    stages = []
    for _ in range(a.stages):
        stages.append(stage(xyz, min(a.k, xyz.shape[1]), a.device, a.repeats))
        centres, _, _ = geometry.sample_and_group(xyz, xyz.shape[1] // 2, 1)
        xyz = geometry.gather(xyz, centres)
    os.environ.pop("PEFT3D_GEOMETRY", None)
    print(json.dumps({"device": a.device, "batch": a.batch, "k": a.k, "torch": torch.__version__,
                      "backend": geometry.geometry_backend(a.device, a.points), "stages": stages}))


if __name__ == "__main__":
    main()
