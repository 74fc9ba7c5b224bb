"""The data-efficiency curve: test accuracy against the labelled training models per class, for every arm that
ran the few-label subsamples of a k-fold partition (``fold_groups`` with ``per_class``, :mod:`peft3d.datasets`),
with the full partition as the last point. Mean and 95% CI over the (fold, seed) replicates of each point: the
regime where frozen pretraining is reported to help most is the left end, so the curve shows whether the
pretrained − random-init gap widens as labels get scarce.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from peft3d.analysis import stats
from peft3d.reporting.figures import arm_panels, line_style

ALL = "all"
COLUMNS = ["full_dataset", "method", "backbone", "weights", "control", "point", "order", "per_class", "n", "mean",
           "ci_low", "ci_high"]


def has_curve(df: pd.DataFrame) -> bool:
    """True when the grid ran a few-label subsample of a declared k-fold partition."""
    return "per_class" in df.columns and bool(df["per_class"].notna().any())


def efficiency_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per arm × point (``5``, ``10``, ``20``, ..., ``all``) of each partition with few-label runs: n
    successful (fold, seed) runs, mean and 95% bootstrap CI of their test accuracy (%). Only arms with at least
    one few-label point are drawn (the others have a single point, not a curve)."""
    if not has_curve(df):
        return pd.DataFrame(columns=COLUMNS)
    ok = df[df["status"] == "success"]
    few = ok[ok["per_class"].notna()]
    rows = []
    for full, fg in few.groupby("full_dataset", sort=False):
        arms = fg[["method", "backbone", "weights"]].drop_duplicates().itertuples(index=False)
        ks = sorted({int(k) for k in fg["per_class"]})
        for method, bb, w in arms:
            mine = ok[(ok["method"] == method) & (ok["backbone"] == bb) & (ok["weights"] == w)]
            for order, k in enumerate([*ks, None]):
                runs = mine[mine["per_class"] == k] if k is not None else mine[mine["dataset"] == full]
                rows.append(_point(runs, full, method, bb, w, order, k))
    return pd.DataFrame(rows, columns=COLUMNS)


def _point(runs: pd.DataFrame, full: str, method: str, bb: str, w: str, order: int, k: int | None) -> dict:
    acc = (runs["test_acc"] * 100).tolist()
    mean, _ = stats.mean_std(acc)
    lo, hi = stats.bootstrap_ci(acc)
    control = str(runs["control"].iloc[0]) if len(runs) else ""
    return {"full_dataset": full, "method": method, "backbone": bb, "weights": w, "control": control,
            "point": ALL if k is None else str(k), "order": order, "per_class": k, "n": len(acc), "mean": mean,
            "ci_low": lo, "ci_high": hi}


def efficiency_figure(frame: pd.DataFrame) -> Any | None:
    """Test accuracy vs labelled models per class, one line per arm (pretrained solid, random init dashed,
    colour by backbone), 95% CI bars; one panel per method × partition."""
    drawn = frame[frame["n"] > 0]
    if drawn.empty:
        return None

    def draw(ax: Any, here: pd.DataFrame, color: dict[str, Any]) -> None:
        for (bb, w), g in here.groupby(["backbone", "weights"], sort=False):
            g = g.sort_values("order")
            err = np.vstack([(g["mean"] - g["ci_low"]).fillna(0).clip(lower=0),
                             (g["ci_high"] - g["mean"]).fillna(0).clip(lower=0)])
            ax.errorbar(g["order"], g["mean"], yerr=err, fmt=line_style(w), marker="o", ms=5, capsize=3,
                        color=color[bb], lw=1.3)
        points = here.drop_duplicates("order").sort_values("order")
        ax.set_xticks(points["order"], list(points["point"]))
        ax.set_xlim(points["order"].min() - 0.3, points["order"].max() + 0.3)
        ax.set_xlabel("labelled training models per class")
        ax.set_ylabel("test accuracy (%), 95% CI")

    return arm_panels(drawn, ("method", "full_dataset"), 5.0, draw)


NOTE = ("Test accuracy (%) of each arm on the few-label subsamples of the k-fold partition (at most k labelled "
        "training models per class, the same test folds) and on the whole partition ('all'); mean and 95% "
        "percentile-bootstrap CI over the (fold, seed) replicates of each point. Solid: pretrained; dashed: random "
        "init. The few-label runs share each fold's test models, so their noise floor is the pooled test set's "
        "binomial SE in the statistics above.")


def efficiency_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Display strings: one row per arm, one column per point (mean [CI], n)."""
    if frame.empty:
        return frame
    def cell(r: Any) -> str:
        if not r.n:
            return "—"
        ci = "" if math.isnan(r.ci_low) else f" [{r.ci_low:.1f}, {r.ci_high:.1f}]"
        return f"{r.mean:.1f}{ci} (n={r.n})"

    shown = frame.assign(cell=[cell(r) for r in frame.itertuples()])
    wide = shown.pivot_table(index=["full_dataset", "method", "backbone", "weights"], columns="point", values="cell",
                             aggfunc="first", sort=False)
    order = list(dict.fromkeys(frame.sort_values("order")["point"]))
    out = wide.reindex(columns=order).reset_index()
    out.columns.name = None
    return out.rename(columns={"full_dataset": "partition", **{p: f"{p} per class" for p in order if p != ALL}})
