"""Samples/s of the training data pipeline, to compare with the model's step rate. Default: batch 32, 1024 points
drawn from 2048 stored (ScanObjectNN), every protocol; also 8192 stored (ModelNet40's Point-BERT cache).

The pipeline is ``sampling.TrainSampler.batch``: the FPS candidates are precomputed once per training set (the
one-off cost is printed), so a batch is a gather plus the augmentation.

    python benchmarks/data_throughput.py                       # synthetic clouds, no files needed
    python benchmarks/data_throughput.py --root DIR            # a ScanObjectNN h5_files folder (or an export)
    python benchmarks/data_throughput.py --stored 2048 8192 --seconds 5 --threads 1
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def measure(points: np.ndarray, proto_name: str, batch: int, seconds: float, sampler) -> float:
    from peft3d.datasets.protocols import get_protocol

    proto, rng = get_protocol(proto_name), np.random.default_rng(0)

    def step(idx: np.ndarray) -> np.ndarray:
        return sampler.batch(idx, proto, rng)

    step(np.arange(batch))  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(rng.integers(0, len(points), batch))
        n += batch
    return n / (time.perf_counter() - t0)


def load_points(root: str | None, stored: int, n: int) -> tuple[np.ndarray, str]:
    if root:
        from peft3d.datasets.scanobjectnn import ScanObjectNN

        t0 = time.perf_counter()
        train, *_ = ScanObjectNN().load_raw("pb_t50_rs", root)
        return train.points, f"ScanObjectNN files under {root} (read in {time.perf_counter() - t0:.2f} s)"
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, stored, 3)).astype(np.float32), f"{n} random clouds"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="ScanObjectNN h5_files folder (default: random clouds)")
    ap.add_argument("--stored", type=int, nargs="+", default=[2048, 8192], help="points stored per sample")
    ap.add_argument("--num-points", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per configuration")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--protocols", nargs="+", default=["any2point_scan", "any2point_mn40", "plain"])
    ap.add_argument("--samples", type=int, default=256, help="random clouds to draw batches from")
    ap.add_argument("--starts", type=int, default=8, help="TrainSampler: FPS starts precomputed per sample")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"train_batch throughput: batch {args.batch}, {args.num_points} points, torch threads "
          f"{torch.get_num_threads()}")
    from peft3d.datasets.sampling import TrainSampler

    for stored in ([None] if args.root else args.stored):
        points, what = load_points(args.root, stored or 0, args.samples)
        print(f"  stored {points.shape[1]} points/sample — {what}")
        t0 = time.perf_counter()
        sampler = TrainSampler(points, args.num_points, starts=args.starts)
        pre = time.perf_counter() - t0
        print(f"    TrainSampler precompute: {pre:.1f} s for {len(points)} samples × {args.starts} starts "
              f"({len(points) / pre:.0f} samples/s, once per training set, then cached on disk)")
        for name in args.protocols:
            rate = measure(points, name, args.batch, args.seconds, sampler)
            print(f"    {name:16s} TrainSampler  {rate:8.0f} samples/s  ({rate / args.batch:6.1f} batches/s)")


if __name__ == "__main__":
    main()
