"""Train-step time of ``any2point`` vs ``adapter`` on the same backbone, and their ratio (target <= 1.5x).

Default: MiniLM at the quickstart settings (128 points -> 16 tokens, batch 16, the quickstart tokenizer and
any2point preset ``minilm_synthetic`` with the quickstart grid's any2point overrides). A step = forward,
cross-entropy, backward, AdamW.
The two models alternate step by step (so load from other processes hits both alike) and the median is
reported. Random weights: the step time does not depend on them.

    python benchmarks/step_time.py
    python benchmarks/step_time.py --backbone test_dinov2 --points 256 --batch 8
    python benchmarks/step_time.py --backbone dinov2 --points 1024 --batch 32 --paper --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import time


def build(backbone: str, method: str, points: int, paper: bool, device: str):
    from peft3d.core.spec import RunSpec, TokenizerCfg, from_mapping
    from peft3d.grids.loader import load_grid
    from peft3d.methods import config_class
    from peft3d.models.build import build_model

    quick = load_grid("quickstart")
    tokenizer = TokenizerCfg() if paper else from_mapping(TokenizerCfg, quick["tokenizer"], "quickstart tokenizer")
    if method == "any2point":
        cls = config_class("any2point")
        preset = next((p for p in (f"paper_{backbone}_scan", f"{backbone}_synthetic", f"{backbone}_scan")
                       if p in cls.presets and (paper or not p.startswith("paper_"))), None)
        overrides = None if paper else quick["method_cfg"].get("any2point")
        cfg = cls.resolve(overrides, preset).to_dict()
    else:
        preset, cfg = None, dict(quick["method_cfg"]["adapter"])
    spec = RunSpec(backbone=backbone, method=method, weights="random", method_cfg=cfg, preset=preset,
                   tokenizer=tokenizer, num_points=points)
    model, _ = build_model(spec, num_classes=15, device=device)
    return model.train(), preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--points", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--paper", action="store_true", help="paper tokenizer and the paper_<backbone>_scan preset")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    xyz = torch.rand(args.batch, args.points, 3, device=args.device) * 2 - 1
    label = torch.randint(0, 15, (args.batch,), device=args.device)
    runs = {}
    for method in ("adapter", "any2point"):
        model, preset = build(args.backbone, method, args.points, args.paper, args.device)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        runs[method] = (model, opt, preset, [])

    def step(model, opt) -> float:
        if args.device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(xyz), label).backward()
        opt.step()
        if args.device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for i in range(args.warmup + args.steps):
        for model, opt, _, times in runs.values():
            dt = step(model, opt)
            if i >= args.warmup:
                times.append(dt)
    print(f"backbone {args.backbone}, {args.points} points, batch {args.batch}, {args.steps} steps, "
          f"threads {torch.get_num_threads()}, device {args.device}")
    med = {}
    for method, (_, _, preset, times) in runs.items():
        med[method] = statistics.median(times)
        print(f"  {method:<10} {med[method] * 1e3:8.1f} ms/step (median; min {min(times) * 1e3:.1f})"
              f"{f'  preset {preset}' if preset else ''}")
    print(f"  ratio any2point / adapter: {med['any2point'] / med['adapter']:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
