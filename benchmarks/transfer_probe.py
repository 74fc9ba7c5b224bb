"""Why does a frozen pretrained encoder learn more slowly than a random one in the shared pipeline? A probe.

For one batch of the synthetic scans, an untrained tokenizer (seeded) and MiniLM-L6 with pretrained / random /
shuffled weights, under a named pipeline preset, it measures what the frozen encoder does to the tokens and to
the gradient that must reach the tokenizer through it:

- ``cos_in`` / ``cos_out``: mean cosine similarity between the tokens of one sample at the encoder's input (after
  the embedding LayerNorm) and at its output (token collapse: 1 = every token the same);
- ``gain``: the encoder's mean per-token output norm / input norm;
- ``vjp``: ||J^T v|| / ||v|| for random unit-variance v at the output (how much of a gradient at the output
  comes back to the tokens; averaged over 8 draws);
- ``grad_tok``: the norm of the cross-entropy gradient on the tokenizer's parameters at initialisation.

    PYTHONPATH=. python benchmarks/transfer_probe.py [--pipeline paper|reference] [--batch 32]

Forward/backward on one batch: seconds on a CPU. Reports what it measured; it trains nothing.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from peft3d.core.spec import Budget, RunSpec, TokenizerCfg, from_mapping
from peft3d.grids.loader import GRID_DIR, load_grid
from peft3d.methods.build import build_model
from peft3d.training.train import load_data


def spec_for(weights: str, preset: str) -> RunSpec:
    g = load_grid(str(GRID_DIR / f"_pipeline_{preset}.yaml"))
    base = load_grid("quickstart")
    tok = from_mapping(TokenizerCfg, {**base["tokenizer"], **g.get("tokenizer", {})}, "tokenizer")
    spec = RunSpec(backbone="minilm", method="linear", weights=weights, num_points=128, tokenizer=tok,
                   budget=from_mapping(Budget, base["budget"], "budget"), head_hidden=256, head_dropout=0.0)
    return RunSpec.from_dict({**spec.to_dict(), "pipeline": g.get("pipeline", {})})


def cos_within(x: torch.Tensor) -> float:
    x = F.normalize(x, dim=-1)
    sim = x @ x.transpose(1, 2)  # (B, T, T)
    t = x.shape[1]
    return float((sim.sum((1, 2)) - t).mean() / (t * (t - 1)))


def probe(weights: str, preset: str, xyz: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, float]:
    torch.manual_seed(0)  # the same tokenizer, pos encoding and head initialisation for every weights
    model, _ = build_model(spec_for(weights, preset), num_classes)
    model.train()
    seen: dict[str, torch.Tensor] = {}
    model.backbone.register_forward_pre_hook(lambda m, a: seen.__setitem__("in", a[0]))
    model.backbone.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out))
    loss = F.cross_entropy(model(xyz), y)
    loss.backward(retain_graph=True)
    grad_tok = torch.sqrt(sum((p.grad ** 2).sum() for p in model.tokenizer.parameters() if p.grad is not None))
    x_in, x_out = seen["in"], seen["out"]
    g = torch.Generator().manual_seed(1)
    ratios = []
    for _ in range(8):
        v = torch.randn(x_out.shape, generator=g)
        (jv,) = torch.autograd.grad(x_out, x_in, v, retain_graph=True)
        ratios.append(float(jv.norm() / v.norm()))
    return {"cos_in": cos_within(x_in.detach()), "cos_out": cos_within(x_out.detach()),
            "gain": float(x_out.detach().norm(dim=-1).mean() / x_in.detach().norm(dim=-1).mean()),
            "vjp": sum(ratios) / len(ratios), "grad_tok": float(grad_tok)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pipeline", default="paper", choices=["paper", "reference"])
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data(spec_for("random", a.pipeline))
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data.train), generator=g)[: a.batch]
    pts = torch.as_tensor(data.train.points[idx.numpy()], dtype=torch.float32)
    xyz = pts[:, torch.randperm(pts.shape[1], generator=g)[:128]]
    y = torch.as_tensor(data.train.labels[idx.numpy()], dtype=torch.long)
    print(f"pipeline {a.pipeline}, batch {a.batch}: encoder input/output statistics at initialisation")
    print(f"{'weights':<12}{'cos_in':>8}{'cos_out':>9}{'gain':>7}{'vjp':>7}{'grad_tok':>10}")
    for w in ("pretrained", "random", "shuffled"):
        r = probe(w, a.pipeline, xyz, y, data.num_classes)
        print(f"{w:<12}{r['cos_in']:>8.3f}{r['cos_out']:>9.3f}{r['gain']:>7.2f}{r['vjp']:>7.3f}{r['grad_tok']:>10.4f}")


if __name__ == "__main__":
    main()
