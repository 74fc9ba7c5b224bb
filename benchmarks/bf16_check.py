"""bf16 autocast vs fp32: the same model and inputs, logits compared (one JSON object on stdout).

    PYTHONPATH=. python3 benchmarks/bf16_check.py --backbone dinov2 --device cuda --paper

Random weights at the backbone's real size; the model is in eval mode (BatchNorm running statistics, no
dropout), so the only difference between the two forwards is the precision.
"""
from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="dinov2")
    ap.add_argument("--methods", nargs="+", default=["linear", "any2point"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--points", type=int, default=None)
    ap.add_argument("--paper", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from peft3d.training.perf import PerfSettings, build_run

    s = PerfSettings(backbone=args.backbone, methods=tuple(args.methods), points=args.points, batch=args.batch,
                     paper=args.paper, device=args.device, precision="fp32",
                     attention="sdpa" if args.device.startswith("cuda") else None)
    g = torch.Generator().manual_seed(0)
    xyz = (torch.rand(s.batch, s.points, 3, generator=g) * 2 - 1).to(s.device)
    labels = torch.zeros(s.batch, dtype=torch.long, device=s.device)
    out = {"backbone": s.backbone, "device": s.device, "points": s.points, "batch": s.batch, "methods": {}}
    for m in s.methods:
        run = build_run(s, m, xyz, labels)
        run.step()  # one training step so BatchNorm statistics are not the initial ones
        model = run.model.eval()
        with torch.no_grad():
            fp32 = model(xyz).float()
            with torch.autocast(torch.device(s.device).type, dtype=torch.bfloat16):
                bf16 = model(xyz).float()
        out["methods"][m] = {
            "max_rel_logit_diff": float((bf16 - fp32).abs().max() / fp32.abs().max().clamp_min(1e-12)),
            "argmax_agreement": float((bf16.argmax(-1) == fp32.argmax(-1)).float().mean())}
        del run, model
    out["max_rel_logit_diff"] = max(v["max_rel_logit_diff"] for v in out["methods"].values())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
