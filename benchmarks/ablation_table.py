"""The transfer_ablation table: pipeline variant -> pretrained vs random (mean ± std over seeds), validation and
test, and the paired gap. Reads only validated result JSONs (peft3d.reporting.tables.runs_frame).

    PYTHONPATH=. python benchmarks/ablation_table.py --results results [--grid transfer_ablation]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from peft3d.grids.loader import expand
from peft3d.reporting.tables import runs_frame

PAPER = {"pos_encoding": "mlp", "cls_token": True, "head": "paper", "token_norm": "batchnorm",
         "schedule": "cosine", "grad_clip": 10.0}
REFERENCE = {"pos_encoding": "table", "cls_token": False, "head": "mean_ln_linear", "token_norm": "none",
             "schedule": "onecycle", "grad_clip": 0.0}


def variant_name(opts: dict) -> str:
    """'paper', 'reference', or '<start> + key=value' for a one-option change."""
    for name, base in (("paper", PAPER), ("reference", REFERENCE)):
        diff = {k: opts[k] for k in base if opts[k] != base[k]}
        if not diff:
            return name
        if len(diff) == 1:
            (k, v), = diff.items()
            return f"{name} + {k}={v}"
    return ",".join(f"{k}={opts[k]}" for k in PAPER)


def ms(x: pd.Series) -> str:
    return f"{100 * x.mean():.1f} ± {100 * x.std(ddof=1):.1f}" if len(x) > 1 else f"{100 * x.mean():.1f}"


def table(grid: str, root: Path) -> pd.DataFrame:
    specs = expand(grid)
    df = runs_frame(specs, root)
    df["variant"] = [variant_name(s.pipeline_options()) for s in specs]
    ok = df[df["status"] == "success"]
    rows = []
    for v, g in ok.groupby("variant", sort=False):
        p, r = g[g["weights"] == "pretrained"], g[g["weights"] == "random"]
        paired = p.set_index("seed")["test_acc"].sub(r.set_index("seed")["test_acc"]).dropna()
        rows.append({"variant": v, "n": f"{len(p)}/{len(r)}",
                     "val pretrained": ms(p["val_acc"]), "val random": ms(r["val_acc"]),
                     "test pretrained": ms(p["test_acc"]), "test random": ms(r["test_acc"]),
                     "gap test (paired)": f"{100 * paired.mean():+.1f}" if len(paired) else "—",
                     "train pretrained": ms(p["train_acc"]), "late sel.": int(g["late_selection"].sum()),
                     "val_pre_mean": p["val_acc"].mean()})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--grid", default="transfer_ablation")
    a = ap.parse_args()
    t = table(a.grid, a.results)
    print(t.drop(columns="val_pre_mean").to_markdown(index=False, disable_numparse=True))
    best = t.sort_values("val_pre_mean", ascending=False).head(3)
    print("\nbest pretrained validation accuracy:", ", ".join(f"{r.variant} ({100 * r.val_pre_mean:.1f})"
                                                               for r in best.itertuples()))


if __name__ == "__main__":
    main()
