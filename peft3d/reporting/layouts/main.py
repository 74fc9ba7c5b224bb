"""``main``: the paper's main table: rows backbone / modality, columns datasets, with trainable parameters."""
from __future__ import annotations

import math

import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.analysis import reference as ref
from peft3d.reporting.folds import replicates
from peft3d.reporting.layouts.common import (
    OURS,
    PAPER_MARK,
    REASON_CHARS,
    Layout,
    binomial_note,
    datasets_of,
    interleave,
    method_params,
    modality_rank,
    paper_columns,
    pick_methods,
    selection_note,
)
from peft3d.reporting.tables import summarize


def main_layout(df: pd.DataFrame, dataset: str | None = None, method: str | None = None,
                reference: str | None = None, versus: str | None = None) -> Layout:
    summary = summarize(df)
    datasets = datasets_of(df, dataset)
    chosen = pick_methods(list(dict.fromkeys(summary["method"])), method, versus)
    s = summary[summary["method"].isin(chosen) & summary["dataset"].isin(datasets)]
    paper = reference == "paper"
    cols = datasets + (paper_columns(datasets) if paper else [])
    keys = s[["backbone", "weights", "method", "modality"]].drop_duplicates()
    keys = keys.assign(_o=keys["modality"].map(modality_rank)).sort_values("_o", kind="stable")
    rows, nums = [], []
    for k in keys.itertuples():
        g = s[(s["backbone"] == k.backbone) & (s["weights"] == k.weights) & (s["method"] == k.method)]
        ok = g[g["n"] > 0]
        own, share = method_params(g)
        r = {"Modality": k.modality, "Backbone": k.backbone + ("" if k.weights == "pretrained" else f" [{k.weights}]"),
             "Method": k.method, "source": OURS, "PEFT params": own, "% of backbone": share,
             "Trainable excl. head": fm.params(ok["params"].max()),
             "incl. head": fm.params(ok["params_trainable"].max()), "_bb": k.backbone}
        n = {"_bb": k.backbone, "modality": k.modality, "backbone": k.backbone, "weights": k.weights,
             "method": k.method, "source": OURS,
             "params_method": ok["params_method"].max(), "params_trainable_excl_head": ok["params"].max(),
             "params_trainable": ok["params_trainable"].max(), "params_backbone": ok["params_backbone"].max()}
        for ds in cols:
            c = g[g["dataset"] == ds]
            row = c.iloc[0] if len(c) else None
            r[ds] = fm.cell(row, REASON_CHARS) if ds in datasets else "—"
            for stat in ("mean", "std", "ci_low", "ci_high", "binom_se", "best_test_mean"):
                n[f"{ds}:{stat}"] = row[stat] if row is not None and row["n"] > 0 else math.nan
            if paper:
                r[f"{ds} best-on-test‡"] = fm.num(row["best_test_mean"]) if row is not None and row["n"] > 0 else "—"
        rows.append(r)
        nums.append(n)
    if paper:
        prows, pnums = main_paper_rows(cols, include_prior=True)
        rows = interleave(rows, prows, lambda r: r.get("_bb"))
        nums = interleave(nums, pnums, lambda r: r.get("_bb"))
    display = pd.DataFrame(rows).drop(columns=["_bb"], errors="ignore")
    numeric = pd.DataFrame(nums).drop(columns=["_bb"], errors="ignore")
    notes = [f"Test accuracy (%) at the best-validation epoch, mean ± std over {replicates(df)}; method: "
             f"{', '.join(chosen)}. "
             "Trainable parameters: the PEFT module alone (and its share of the backbone's block parameters), "
             "everything trainable except the head (the paper's convention: PEFT module + the shared tokenizer and "
             "norms), and everything trainable.", binomial_note(s)]
    if paper:
        notes.append(selection_note())
    return Layout("main", "Main table: test accuracy (%) by backbone and dataset", display, numeric,
                  [n for n in notes if n])


def main_paper_rows(cols: list[str], include_prior: bool) -> tuple[list[dict], list[dict]]:
    rows, nums = [], []
    for p in ref.any2point_rows() + (ref.PRIOR_WORK if include_prior else []):
        vals = {ds: ref.paper_acc(p, ds) for ds in cols}
        if all(v is None for v in vals.values()):
            continue
        r = {"Modality": p.modality, "Backbone": p.backbone or "—", "Method": p.label, "source": "paper",
             "PEFT params": "—", "Trainable excl. head": f"{p.params_m}M" if p.params_m else "—",
             "incl. head": "—", "_bb": p.backbone}
        n = {"modality": p.modality, "backbone": p.backbone, "weights": None, "method": p.label, "source": "paper",
             "params_trainable_excl_head": p.params_m * 1e6 if p.params_m else math.nan, "_bb": p.backbone}
        for ds, v in vals.items():
            r[ds] = PAPER_MARK if v is not None else "—"
            r[f"{ds} best-on-test‡"] = (fm.num(v) + ("*" if p.voting and ds.startswith("modelnet") else "")
                                        if v is not None else "—")
            n[f"{ds}:best_test_mean"] = v if v is not None else math.nan
        rows.append(r)
        nums.append(n)
    return rows, nums
