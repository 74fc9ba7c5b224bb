"""``modality``: language vs 2D vision vs audio, averaged over the backbones of each modality, with CIs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.analysis import reference as ref
from peft3d.analysis import stats
from peft3d.reporting.folds import replicates
from peft3d.reporting.layouts.common import (
    MODALITY_ORDER,
    OURS,
    Layout,
    datasets_of,
    interleave,
    paper_columns,
    pick_methods,
    selection_note,
)


def modality_layout(df: pd.DataFrame, dataset: str | None = None, method: str | None = None,
                    reference: str | None = None, versus: str | None = None) -> Layout:
    datasets = datasets_of(df, dataset)
    chosen = pick_methods(list(dict.fromkeys(df["method"])), method, versus)
    ok = df[(df["status"] == "success") & df["method"].isin(chosen) & df["dataset"].isin(datasets)]
    paper = reference == "paper"
    cols = datasets + (paper_columns(datasets) if paper else [])
    rows, nums = [], []
    for m in chosen:
        g = ok[ok["method"] == m]
        block = []
        for mod, gm in g.groupby("modality", sort=False):
            r = {"Method": m, "Modality": mod, "source": OURS,
                 "Backbones": ", ".join(dict.fromkeys(gm["backbone"]))}
            n = {"method": m, "modality": mod, "source": OURS, "backbones": r["Backbones"]}
            for ds in cols:
                x = gm[gm["dataset"] == ds]
                acc = (x["test_acc"] * 100).tolist()
                bb_means = (x.groupby("backbone")["test_acc"].mean() * 100) if len(x) else pd.Series(dtype=float)
                mean = float(bb_means.mean()) if len(bb_means) else math.nan
                lo, hi = stats.bootstrap_ci(acc)
                n.update({f"{ds}:mean": mean, f"{ds}:ci_low": lo, f"{ds}:ci_high": hi, f"{ds}:n_runs": len(acc),
                          f"{ds}:backbone_min": bb_means.min() if len(bb_means) else math.nan,
                          f"{ds}:backbone_max": bb_means.max() if len(bb_means) else math.nan})
                r[ds] = fm.num(mean) + (f" [{lo:.1f}, {hi:.1f}]" if not fm.is_missing(lo) else "")
            block.append((r, n))
        for ds in cols:  # rank modalities within the method and dataset, 1 = best
            means = pd.Series([n[f"{ds}:mean"] for _, n in block])
            for (r, n), rk in zip(block, means.rank(ascending=False, method="min"), strict=True):
                n[f"{ds}:rank"] = rk
                if ds in datasets:
                    r[f"{ds} rank"] = "—" if fm.is_missing(rk) else str(int(rk))
        block.sort(key=lambda rn: np.nanmean([rn[1][f"{d}:rank"] for d in datasets])
                   if not all(fm.is_missing(rn[1][f"{d}:rank"]) for d in datasets) else math.inf)
        rows += [r for r, _ in block]
        nums += [n for _, n in block]
    reps = replicates(df)
    unit_runs = "seeds" if reps == "seeds" else "(fold, seed)"
    notes = [f"Method: {', '.join(chosen)}. Each modality: mean of its backbones' mean test accuracy (%) over "
             f"{reps}; 95% CI: percentile bootstrap over the runs pooled across the modality's backbones ({unit_runs} "
             "× backbones) — with 1-2 backbones per modality it cannot capture between-backbone variance; the CSV "
             "gives each modality's backbone range. A randomly initialised backbone transfers no modality."]
    if paper:
        prow, pnum = _modality_paper_rows(cols)
        rows = interleave(rows, prow, lambda r: (r["Method"], r["Modality"]))
        nums = interleave(nums, pnum, lambda r: (r["method"], r["modality"]))
        notes.append("Paper rows list the paper's own per-backbone figures (it reports no modality average). "
                     + selection_note())
    return Layout("modality", "Modality ranking: test accuracy (%) by pretraining modality", pd.DataFrame(rows),
                  pd.DataFrame(nums), notes)


def _modality_paper_rows(cols: list[str]) -> tuple[list[dict], list[dict]]:
    rows, nums = [], []
    for mod in MODALITY_ORDER:
        ps = [p for p in ref.any2point_rows() if p.modality == mod]
        r = {"Method": ref.PAPER_METHOD, "Modality": mod, "source": "paper",
             "Backbones": ", ".join(p.backbone for p in ps if p.backbone)}
        n = {"method": ref.PAPER_METHOD, "modality": mod, "source": "paper", "backbones": r["Backbones"]}
        for ds in cols:
            figs = [(p.backbone, ref.paper_acc(p, ds)) for p in ps if ref.paper_acc(p, ds) is not None]
            r[ds] = ", ".join(f"{v:.1f}‡ ({b})" for b, v in figs) or "—"
            n.update({f"{ds}:{b}": v for b, v in figs})
        rows.append(r)
        nums.append(n)
    return rows, nums
