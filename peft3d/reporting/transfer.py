"""Does pretraining transfer? The section that opens a table when a grid holds controls.

Rows: each pretrained backbone (labelled with its modality), ranked by mean test accuracy within a method ×
dataset, then the controls (random init, shuffled, no transformer). For every pretrained row and every kind of
control, the paired difference over seeds and its p-values. A pretrained row is compared with the control of
the *same* backbone when the grid ran one (the fair control: same architecture, same depth); otherwise with
that kind of control from another backbone, and the column says which (protocol.md "Controls"); while the grid's
own control for that backbone is still running, with none ("its own not run yet").
"""
from __future__ import annotations

import math

import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.analysis import stats
from peft3d.reporting.folds import (
    CORRECTED_NOTE,
    fold_corrected_p,
    fold_lsd,
    is_pooled,
    permutation_note,
    replicate_keys,
    test_train_ratio,
)

CONTROL_KINDS = ["random init", "shuffled", "no transformer"]
SHORT = {"random init": "random", "shuffled": "shuffled", "no transformer": "none"}


def has_controls(df: pd.DataFrame) -> bool:
    """True when the grid ran at least one pretrained backbone and at least one control."""
    ok = df[df["status"] == "success"]
    return bool((ok["control"] == "").any() and (ok["control"] != "").any())


def by_replicate(g: pd.DataFrame) -> pd.Series:
    """Test accuracy (points) per replicate: seed, or (fold, seed) on a k-fold dataset."""
    return (g.groupby(replicate_keys(g))["test_acc"].first() * 100).sort_index()


def paired(a: pd.Series, b: pd.Series, runs: pd.DataFrame) -> dict[str, float]:
    """``a`` − ``b`` over the replicates both have (series indexed like :func:`by_replicate`): mean difference,
    permutation p, number of pairs and, on a k-fold dataset (``runs`` say which), the corrected fold p and that
    test's least significant difference (``lsd``)."""
    common = a.index.intersection(b.index)
    p = stats.paired_compare(a[common].to_numpy(), b[common].to_numpy())
    pooled, ratio = is_pooled(runs), test_train_ratio(runs)  # pool: the same folds on both sides
    return {"delta": p.mean_diff, "p": p.p_permutation, "pairs": p.n,
            "p_folds": fold_corrected_p(a, b, ratio) if pooled else math.nan,
            "lsd": fold_lsd(a, b, ratio) if pooled else math.nan}


def paired_text(delta: float, p: float, pairs: float, p_folds: float = math.nan, also: str = "") -> str:
    """One paired comparison as a cell: ``+4.4 (p = 0.004, n=15; p (folds) = 0.092)``; ``also`` is added last
    inside the brackets (e.g. ``vs minilm``)."""
    parts = [f"p {fm.p_relation(p)}, n={int(pairs)}"]
    parts += [] if fm.is_missing(p_folds) else [f"p (folds) {fm.p_relation(p_folds)}"]
    parts += [also] if also else []
    return f"{fm.signed(delta)} ({'; '.join(parts)})"


def arm_config(runs: pd.DataFrame) -> dict:
    """An arm's (a cell's) learning rate, weight decay and tuning objective: nan unless every successful run used
    the same; ``tuned`` when every run carries ``bench tune``'s block."""
    def one(col: str) -> float:
        vals = runs[col].dropna().unique() if col in runs else []
        return float(vals[0]) if len(vals) == 1 else math.nan

    def only(col: str) -> str | None:  # a text column's single value, else None
        vals = runs[col].dropna().unique() if col in runs else []
        return vals[0] if len(vals) == 1 else None

    tuned = bool(len(runs)) and "tuned" in runs and bool(runs["tuned"].fillna(False).astype(bool).all())
    edge = bool(runs["lr_edge"].fillna(False).astype(bool).any()) if "lr_edge" in runs else False
    return {"lr": one("lr"), "weight_decay": one("weight_decay"), "tuned": tuned,
            "tune_objective": one("tune_objective"), "lr_edge": edge, "tune_study": only("tune_study"),
            "lr_range": only("lr_range")}


PENDING = "pending"  # the tag of a same-backbone control the grid plans but has not finished


def _control_pool(cell: pd.DataFrame, kind: str, backbone: str, method: str,
                  planned: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str]:
    """The runs of control ``kind`` to pair with ``backbone``/``method``: same backbone if run, else another
    backbone's (the no-transformer control only has the linear probe: any method is taken, and named). When the
    grid plans the same backbone's control (a row of ``planned``, any status) but none of its runs succeeded yet,
    nothing is paired (tag ``PENDING``): another backbone's twin would stand in for a comparison still running."""
    def own(runs: pd.DataFrame) -> pd.DataFrame:
        return runs[(runs["control"] == kind) & (runs["backbone"] == backbone) & (runs["method"] == method)]

    ctl = cell[cell["control"] == kind]
    if own(ctl).empty and planned is not None and len(own(planned)):
        return ctl.iloc[0:0], PENDING
    for pick in (own(ctl), ctl[ctl["method"] == method], ctl):
        if len(pick):
            first = pick.iloc[0]
            same = pick[(pick["backbone"] == first["backbone"]) & (pick["method"] == first["method"])]
            tag = "" if first["backbone"] == backbone and first["method"] == method else \
                f"{first['backbone']}" + ("" if first["method"] == method else f", {first['method']}")
            return same, tag
    return ctl, ""


def transfer_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, method, backbone, weights): mean ± std, bootstrap CI, validation mean, rank among
    the pretrained rows, the tuned lr / weight decay when ``bench tune`` chose them, and for pretrained rows the
    paired Δ and p against each kind of control (paired by seed; by (fold, seed) on a k-fold dataset)."""
    ok = df[df["status"] == "success"]
    rows = []
    for (ds, method), cell in ok.groupby(["dataset", "method"], sort=False):
        controls_here = ok[ok["dataset"] == ds]  # controls may have run under another method (none: linear)
        planned_here = df[df["dataset"] == ds]  # every expected run, finished or not
        for (bb, w), g in cell.groupby(["backbone", "weights"], sort=False):
            acc = (g["test_acc"] * 100).tolist()
            mean, std = stats.mean_std(acc)
            lo, hi = stats.bootstrap_ci(acc)
            ctl = str(g["control"].iloc[0])
            r = {"dataset": ds, "method": method, "backbone": bb, "weights": w, "modality": g["modality"].iloc[0],
                 "control": ctl, "n": len(acc), "mean": mean, "std": std, "ci_low": lo, "ci_high": hi,
                 "val_mean": float((g["val_acc"] * 100).mean()), "n_late": int((g["late_selection"] == True).sum()),  # noqa: E712
                 **arm_config(g)}
            if not ctl:
                for kind in CONTROL_KINDS:
                    pool, tag = _control_pool(controls_here, kind, bb, method, planned_here)
                    if tag == PENDING:
                        r[f"vs_{SHORT[kind]}:pending"] = True
                    if pool.empty:
                        continue
                    key = SHORT[kind]
                    pair = paired(by_replicate(g), by_replicate(pool), g)
                    r.update({f"vs_{key}:{k}": v for k, v in pair.items()})
                    r[f"vs_{key}:of"] = tag
            rows.append(r)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    real = out["control"] == ""
    out["rank"] = math.nan
    out.loc[real, "rank"] = out[real].groupby(["dataset", "method"])["mean"].rank(ascending=False, method="min")
    order = {d: i for i, d in enumerate(dict.fromkeys(df["dataset"]))}  # the grid's order (n5 before n10)
    return out.sort_values(["dataset", "method", "control", "rank", "mean"],
                           ascending=[True, True, True, True, False], kind="stable",
                           key=lambda c: c.map(order) if c.name == "dataset" else c).reset_index(drop=True)


def _vs_cell(r: pd.Series, key: str) -> str:
    d = r.get(f"vs_{key}:delta")
    if fm.is_missing(d):
        pending = r.get(f"vs_{key}:pending")
        return f"{fm.MISSING} (its own not run yet)" if not fm.is_missing(pending) and bool(pending) else fm.MISSING
    of = r.get(f"vs_{key}:of") or ""
    return paired_text(d, r[f"vs_{key}:p"], r[f"vs_{key}:pairs"], r.get(f"vs_{key}:p_folds", math.nan),
                       f"vs {of}" if of else "")


TITLE = "Does pretraining transfer? Modality ranking against the controls"


def pairing_note(df: pd.DataFrame) -> str:
    """How the paired Δ of this section and the next are paired and tested, for the table's replicates."""
    if is_pooled(df):
        return ("paired by (fold, seed); p: two-sided paired permutation test over those pairs (" +
                permutation_note(df) + "); " + CORRECTED_NOTE)
    return ("paired by seed; p: two-sided paired permutation test (with 3 seeds p ≥ 0.25, so no single grid "
            "of 3 seeds is 'significant': read Δ against the test set's noise floor and the CIs)")


def note(df: pd.DataFrame) -> str:
    """What the section's numbers are; the pairing and the smallest p follow the table's replicates."""
    pairing = pairing_note(df)
    tuned = (" lr / wd: the learning rate and weight decay `bench tune` chose for the arm on validation (its "
             f"own study, the same budget as every arm). {fm.EDGE_NOTE}"
             if "tuned" in df and df["tuned"].fillna(False).any() else "")
    return ("Pretrained backbones ranked by mean test accuracy (%) within each dataset × method; controls below "
            "(random init: the same architecture, library initialisation; shuffled: every pretrained tensor's "
            f"entries permuted; none: no transformer blocks). Δ = pretrained − control in points, {pairing}. The "
            "control is the same backbone's when the grid ran it, else the one named. ‡: a run selected an epoch in "
            "the last 10% (possibly under-trained). A modality transfers only if it beats every control by more "
            f"than the noise.{tuned}")


def transfer_table(df: pd.DataFrame, tf: pd.DataFrame | None = None) -> pd.DataFrame:
    """Display strings of :func:`transfer_frame` (empty when nothing succeeded); ``tf``: that frame, when the
    caller has it already (its permutation tests are the section's cost)."""
    tf = transfer_frame(df) if tf is None else tf
    if tf.empty:
        return tf
    kinds = [SHORT[k] for k in CONTROL_KINDS if f"vs_{SHORT[k]}:delta" in tf]
    shown = pd.DataFrame({
        "dataset": tf["dataset"], "method": tf["method"],
        "rank": [fm.MISSING if fm.is_missing(x) else str(int(x)) for x in tf["rank"]],
        "modality": [m if not c else f"control: {c}" for m, c in zip(tf["modality"], tf["control"], strict=True)],
        "backbone": tf["backbone"], "weights": tf["weights"],
        "test mean ± std": [fm.num(m) + (f" ± {s:.1f}" if not math.isnan(s) else "") + (" ‡" if k else "")
                            for m, s, k in zip(tf["mean"], tf["std"], tf["n_late"], strict=True)],
        "95% CI": [f"[{lo:.1f}, {hi:.1f}]" if not math.isnan(lo) else "— (n<2)"
                   for lo, hi in zip(tf["ci_low"], tf["ci_high"], strict=True)],
        "val": tf["val_mean"].map(fm.num), "seeds": tf["n"].astype(int)})
    if tf["tuned"].any():
        shown.insert(shown.columns.get_loc("test mean ± std"), "lr / wd",
                     [f"{fm.sci(lr)}{fm.EDGE_MARK if e else ''} / {fm.sci(wd)}" if t else fm.MISSING
                      for lr, wd, t, e in zip(tf.get("lr", math.nan), tf.get("weight_decay", math.nan), tf["tuned"],
                                              tf.get("lr_edge", False), strict=True)])
    if is_pooled(df):
        shown = shown.rename(columns={"seeds": "(fold, seed)"})
    for k in kinds:
        shown[f"Δ vs {k}"] = [_vs_cell(r, k) if not r["control"] else "" for _, r in tf.iterrows()]
    return shown


def resolution_note(tf: pd.DataFrame) -> str:
    """How large a pretrained − control gap the conservative test could have established, per k-fold dataset and
    kind of control: the range and median of its least significant differences. Without it a reader takes
    "not significant" for "no transfer"; a gap below the LSD is unresolved, not absent. Empty off folds."""
    parts = []
    for ds, g in tf.groupby("dataset", sort=False):
        kinds = []
        for kind in CONTROL_KINDS:
            col = f"vs_{SHORT[kind]}:lsd"
            lsd = g[col].dropna() if col in g else pd.Series(dtype=float)
            if len(lsd):
                kinds.append(f"vs {kind} {lsd.min():.1f} to {lsd.max():.1f} points (median {lsd.median():.1f}, "
                             f"{len(lsd)} comparison{'s' if len(lsd) > 1 else ''})")
        if kinds:
            parts.append(f"{ds}: " + ", ".join(kinds))
    if not parts:
        return ""
    return ("Resolution of p (folds): the least significant difference, the |Δ| that test puts below 0.05 at the "
            "spread of a comparison's fold differences, t(0.975, J − 1) · √((1/J + 1/(k − 1)) · s²) — "
            + "; ".join(parts) + ". A gap smaller than its comparison's is unresolved by the conservative test: "
            "neither shown nor ruled out.")


def transfer_markdown(df: pd.DataFrame) -> list[str]:
    """The opening section: modality ranking with CIs, controls below, paired tests against each control, and
    on folds how large a gap those tests could resolve."""
    tf = transfer_frame(df)
    shown = transfer_table(df, tf)
    if shown.empty:
        return []
    resolution = resolution_note(tf)
    return [f"## {TITLE}", "", fm.markdown(shown), "", note(df), "", *([resolution, ""] if resolution else [])]
