"""Speed-up of K worker slots over 1 on a small grid: the wall time of ``bench run``'s scheduler
(:func:`peft3d.schedule.runner.run_specs`) for the same runs with 1 slot and with K slots.

CPU (default): every slot single-threaded (``torch`` 1 thread), so the figure is the scheduler's scaling over
cores, not torch's intra-op threading. GPU (``--devices cuda:0,cuda:1,...``): one slot per listed GPU vs the
first GPU alone. Each repetition uses a fresh results folder; the FPS caches are warmed first (shared
``PEFT3D_CACHE``) so no configuration pays them. Configurations alternate (1, K, 1, K, ...) so load from other
processes hits both alike; the medians and their ratio are printed.

    python benchmarks/scaleout.py                       # 2 CPU slots vs 1, smoke grid methods, 3 epochs
    python benchmarks/scaleout.py --workers 4 --reps 5
    python benchmarks/scaleout.py --devices cuda:0,cuda:1,cuda:2,cuda:3 --grid quickstart
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def specs_for(grid: str, epochs: int, runs: int, device: str):
    from peft3d.grids.loader import expand

    specs = expand(grid, device=device)
    specs = [s.replace(budget=s.budget.__class__(**{**s.budget.__dict__, "epochs": epochs})) for s in specs]
    return specs[:runs]


def wall(specs, slots) -> float:
    from peft3d.schedule.runner import run_specs

    with tempfile.TemporaryDirectory(prefix="peft3d-scaleout-") as d:
        t0 = time.perf_counter()
        done = run_specs(specs, Path(d), slots=slots)
        elapsed = time.perf_counter() - t0
    bad = [r.get("error") for r in done if r.get("status") != "success"]
    if bad or len(done) != len(specs):
        raise SystemExit(f"runs failed: {bad}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", default="smoke")
    ap.add_argument("--workers", type=int, default=2, help="CPU slots to compare with 1")
    ap.add_argument("--devices", default=None, help="cuda:0,cuda:1,...: one slot per GPU vs the first alone")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--runs", type=int, default=6, help="runs of the grid used (a multiple of the workers)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PEFT3D_CACHE", tempfile.mkdtemp(prefix="peft3d-scaleout-cache-"))
    from peft3d.schedule.devices import Slot, parse_devices

    if args.devices:
        many = parse_devices(args.devices)
        one, device = many[:1], "cuda"
    else:
        many = [Slot(f"cpu{i}", None, 1) for i in range(args.workers)]
        one, device = many[:1], "cpu"
    specs = specs_for(args.grid, args.epochs, args.runs, device)
    print(f"{len(specs)} runs of grid {args.grid}, {args.epochs} epochs; {len(one)} slot vs {len(many)} slots "
          f"({', '.join(s.name for s in many)}); {os.cpu_count()} CPUs; {args.reps} alternated repetitions")
    wall(specs[:1], one)  # warm the caches (FPS banks, evaluation inputs)
    times: dict[int, list[float]] = {1: [], len(many): []}
    for rep in range(args.reps):
        for slots in (one, many):
            t = wall(specs, slots)
            times[len(slots)].append(t)
            print(f"  rep {rep + 1}: {len(slots)} slot(s) {t:.1f} s", flush=True)
    m1, mk = statistics.median(times[1]), statistics.median(times[len(many)])
    print(f"median wall: 1 slot {m1:.1f} s, {len(many)} slots {mk:.1f} s -> speed-up {m1 / mk:.2f}x")


if __name__ == "__main__":
    main()
