"""``peft``: methods × backbones on one dataset, with Δ to the compared-to method."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.analysis import reference as ref
from peft3d.reporting.folds import replicates
from peft3d.reporting.layouts.common import (
    OURS,
    PAPER_DATASETS,
    REASON_CHARS,
    Layout,
    binomial_note,
    datasets_of,
    interleave,
    method_params,
    selection_note,
)
from peft3d.reporting.tables import default_versus, paired_frame, summarize


def peft_layout(df: pd.DataFrame, dataset: str | None = None, versus: str | None = None,
                reference: str | None = None) -> Layout:
    ds = datasets_of(df, dataset)[0]
    sub = df[df["dataset"] == ds]
    summary = summarize(sub)
    methods = list(dict.fromkeys(summary["method"]))
    versus = versus or default_versus(list(dict.fromkeys(df["method"])))
    has_versus = versus in methods
    bb = summary[["backbone", "weights"]].drop_duplicates()
    multi_w = bb["weights"].nunique() > 1
    col = {(b, w): b + (f" [{w}]" if multi_w or w != "pretrained" else "") for b, w in bb.itertuples(index=False)}
    paired = paired_frame(sub, versus) if has_versus else pd.DataFrame()
    rows, nums = [], []
    for m in methods:
        g = summary[summary["method"] == m]
        r, n = _method_columns(m, ds, g)
        deltas, means = [], []
        for (b, w), name in col.items():
            c = g[(g["backbone"] == b) & (g["weights"] == w)]
            row = c.iloc[0] if len(c) else None
            v = summary[(summary["method"] == versus) & (summary["backbone"] == b) & (summary["weights"] == w)]
            delta = row["mean"] - v["mean"].iloc[0] if has_versus and row is not None and len(v) else math.nan
            shows_delta = has_versus and m != versus and not fm.is_missing(delta)
            r[name] = fm.cell(row, REASON_CHARS) + (f" (Δ {fm.signed(delta)})" if shows_delta else "")
            pr = paired[(paired["method"] == m) & (paired["backbone"] == b) & (paired["weights"] == w)] \
                if has_versus and m != versus else pd.DataFrame()
            n.update({f"{name}:mean": row["mean"] if row is not None else math.nan,
                      f"{name}:std": row["std"] if row is not None else math.nan, f"{name}:delta": delta,
                      f"{name}:p_permutation": pr["p_permutation"].iloc[0] if len(pr) else math.nan,
                      f"{name}:prob_improvement": pr["prob_improvement"].iloc[0] if len(pr) else math.nan})
            means.append(row["mean"] if row is not None else math.nan)
            deltas.append(delta)
        r["Mean over backbones"] = fm.num(np.nanmean(means) if not all(map(fm.is_missing, means)) else math.nan)
        r[f"Δ to {versus}"] = fm.signed(np.nanmean(deltas)) if has_versus and m != versus and \
            not all(map(fm.is_missing, deltas)) else "—"
        n.update(mean_over_backbones=np.nanmean(means) if not all(map(fm.is_missing, means)) else math.nan,
                 delta_mean=np.nanmean(deltas) if not all(map(fm.is_missing, deltas)) else math.nan)
        rows.append(r)
        nums.append(n)
    notes = [f"{ds}: test accuracy (%) at the best-validation epoch, mean ± std over {replicates(df)}; Δ = method − "
             f"{versus} on the same backbone (cell means; paired tests over {replicates(df)}: `bench table` default "
             "layout, p-values in the CSV).", binomial_note(summary)]
    if not has_versus:
        notes.append(f"No {versus} runs in this grid: Δ omitted (choose another with --versus).")
    if reference == "paper":
        prow, pnum, pnote = _peft_paper_rows(ds, col, versus)
        rows = interleave(rows, prow, lambda r: r.get("Method"))
        nums = interleave(nums, pnum, lambda r: r.get("method"))
        notes += [pnote, selection_note()]
    return Layout("peft", f"PEFT methods × backbones on {ds}: test accuracy (%)", pd.DataFrame(rows),
                  pd.DataFrame(nums), [n for n in notes if n])


def _method_columns(m: str, ds: str, g: pd.DataFrame) -> tuple[dict[str, Any], dict[str, Any]]:
    """A method row's opening columns, display and numeric: its own parameters and their share of the backbone."""
    own, share = method_params(g)
    return ({"Method": m, "source": OURS, "PEFT params": own, "% of backbone": share},
            {"method": m, "source": OURS, "dataset": ds, "params_method": g["params_method"].max(),
             "params_share_min": _share(g, min), "params_share_max": _share(g, max)})


def _share(cells: pd.DataFrame, pick: Any) -> float:
    """The method's own parameters as a fraction of the backbone's, the smallest or largest over backbones."""
    ok = cells[(cells["n"] > 0) & (cells["params_backbone"].astype(float) > 0)]
    fractions = (ok["params_method"].astype(float) / ok["params_backbone"].astype(float)).dropna()
    return pick(fractions) if len(fractions) else math.nan


def _peft_paper_rows(ds: str, col: dict, versus: str) -> tuple[list[dict], list[dict], str]:
    rows, nums = [], []
    by_bb = {p.backbone: p for p in ref.any2point_rows()}
    vals = {name: ref.paper_acc(by_bb[b], ds) if b in by_bb else None for (b, _), name in col.items()}
    if any(v is not None for v in vals.values()):
        r = {"Method": ref.PAPER_METHOD, "source": "paper"}
        r.update({name: (f"{v:.1f}‡" if v is not None else "—") for name, v in vals.items()})
        rows.append(r)
        nums.append({"method": ref.PAPER_METHOD, "source": "paper", **{f"{k}:best_test": v for k, v in vals.items()}})
    exact = ref.dataset_key(ds) is not None
    for m in ref.PEFT_GAINS:
        if exact:
            txt, val = fm.signed(ref.peft_delta(m, ds)), ref.peft_delta(m, ds)
        else:  # a dataset the paper does not cover: show its figures with their datasets named
            txt = " / ".join(f"{fm.signed(ref.peft_delta(m, d))} ({d})" for d in PAPER_DATASETS)
            val = math.nan
        rows.append({"Method": m, "source": "paper", f"Δ to {versus}": txt})
        nums.append({"method": m, "source": "paper", "delta_mean": val,
                     **({} if exact else {f"delta:{d}": ref.peft_delta(m, d) for d in PAPER_DATASETS})})
    note = f"Paper Δ rows: {ref.PEFT_SOURCE}."
    if not exact:
        note += f" The paper has no figures for {ds}; its figures are shown with their datasets named."
    return rows, nums, note
