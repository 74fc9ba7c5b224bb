"""The report's figures, built from the runs frame and its summary: accuracy vs trainable parameters with the
Pareto front, the modality ranking with CIs, learning curves and the critical-difference diagram (Friedman +
Nemenyi, Demšar 2006). Each ``*_figure`` returns a matplotlib Figure (or None when there is nothing to draw);
:mod:`peft3d.reporting.report` turns it into an image through :func:`peft3d.reporting.canvas.img`, which checks
that no two of its labels collide.

Legibility is designed in, not hoped for: axis ticks come from locators sized to the axis (a log axis of
near-equal parameter counts gets a few 1-2-5 ticks in short units, never one label per minor tick), category
labels are wrapped and the panel widens with their number, panels wrap into rows, and legends sit below the
panels where they cannot cover labels.
"""
from __future__ import annotations

import math
import textwrap
from typing import Any

import numpy as np
import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.reporting import layouts
from peft3d.reporting.canvas import figure
from peft3d.reporting.tables import friedman_of

MARKERS = {"language": "o", "vision": "s", "audio": "^"}
SPARE_MARKERS = ["D", "v", "P", "X", "*"]
WEIGHT_STYLES = {"pretrained": "-", "random": "--"}  # shuffled controls dotted, anything else dash-dot
MAX_WIDTH_IN = 16.0  # wider figures wrap their panels into rows


def colors(names: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if len(names) <= 10 else colormaps["tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def markers(modalities: list[str]) -> dict[str, str]:
    """The three paper modalities keep fixed markers; any other (e.g. "none (random init)") gets a spare one."""
    out = {m: MARKERS[m] for m in MARKERS if m in modalities}
    spare = iter(SPARE_MARKERS * 4)
    out.update({m: next(spare) for m in modalities if m not in MARKERS})
    return out


def line_style(weights: str) -> str:
    return WEIGHT_STYLES.get(weights, ":" if str(weights).startswith("shuffled") else "-.")


def wrap(text: Any, width: int) -> str:
    return textwrap.fill(str(text), width, break_long_words=True, break_on_hyphens=True)


def panels(n: int, panel_w: float, panel_h: float) -> tuple[Any, int]:
    """A figure for ``n`` panels of the given size, wrapped into rows so it stays under MAX_WIDTH_IN; (figure,
    columns)."""
    cols = max(1, min(n, int(MAX_WIDTH_IN // panel_w)))
    rows = math.ceil(n / cols)
    return figure(panel_w * cols, panel_h * rows), cols


def legend_below(fig: Any, handles: list[Any], fontsize: int = 8) -> None:
    """The figure's legend under its panels (``bbox_inches="tight"`` keeps it in the PNG), as many columns as fit
    the figure's width for the longest entry."""
    if not handles:
        return
    longest = max(len(h.get_label()) for h in handles)
    fits = int(fig.get_figwidth() * 72 / (longest * fontsize * 0.6 + 30))
    fig.legend(handles=handles, loc="upper center", ncol=max(1, min(len(handles), fits)), fontsize=fontsize,
               bbox_to_anchor=(0.5, 0.0), frameon=False)


def arm_panels(frame: pd.DataFrame, keys: tuple[str, str], panel_w: float, draw: Any, extra: tuple = ()) -> Any:
    """One panel per value pair of ``keys`` (titled "first — second"); ``draw(ax, rows, color)`` draws the arms
    of a panel, a colour per backbone and a line style per weights (:func:`line_style`), which the legend below
    names (with ``extra`` handles)."""
    from matplotlib.lines import Line2D

    cells = list(dict.fromkeys(zip(frame[keys[0]], frame[keys[1]], strict=True)))
    color = colors(sorted(set(frame["backbone"])))  # sorted: a backbone keeps its colour in every arm figure
    fig, cols = panels(len(cells), panel_w, 4.0)
    for i, (a, b) in enumerate(cells):
        ax = fig.add_subplot(math.ceil(len(cells) / cols), cols, i + 1)
        draw(ax, frame[(frame[keys[0]] == a) & (frame[keys[1]] == b)], color)
        ax.set_title(wrap(f"{a} — {b}", 50), fontsize=10)
        ax.grid(alpha=.3)
    fig.tight_layout()
    handles = [Line2D([], [], color=c, marker="o", label=bb) for bb, c in color.items()]
    handles += [Line2D([], [], color="gray", ls=line_style(w), label=str(w)) for w in dict.fromkeys(frame["weights"])]
    legend_below(fig, handles + list(extra))
    return fig


def log_axis(ax: Any, which: str, values: list[float], label_of: Any) -> None:
    """A log axis whose ticks stay legible for any spread of ``values``: limits padded to at least a factor of
    4 (so a 1-2-5 tick falls inside even when every value is nearly the same), 1-2-5 ticks across up to ~2.5
    decades and decade ticks beyond, minor ticks unlabelled, labels from ``label_of`` (e.g. ``0.28M``)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    v = [x for x in values if x and x > 0 and math.isfinite(x)]
    lo, hi = (min(v), max(v)) if v else (1.0, 10.0)
    pad = 2.0 if hi / lo < 4 else 1.5
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    (ax.set_xlim if which == "x" else ax.set_ylim)(lo / pad, hi * pad)
    decades = math.log10(hi * pad) - math.log10(lo / pad)
    subs = (1.0, 2.0, 5.0) if decades <= 2.6 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=7))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10)), numticks=50))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: label_of(x)))
    axis.set_minor_formatter(NullFormatter())


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated points (fewer parameters, higher accuracy), by increasing parameters."""
    front, best = [], -math.inf
    for p, a in sorted(points, key=lambda t: (t[0], -t[1])):
        if a > best:
            front.append((p, a))
            best = a
    return front


def pareto_figure(summary: pd.DataFrame) -> Any | None:
    """Test accuracy vs trainable parameters (excluding the head) per dataset, with the Pareto front."""
    from matplotlib.lines import Line2D

    ok = summary[(summary["n"] > 0) & (summary["params"].astype(float) > 0)]
    if ok.empty:
        return None
    datasets = list(dict.fromkeys(ok["dataset"]))
    color = colors(list(dict.fromkeys(summary["method"])))
    marker = markers(list(dict.fromkeys(ok["modality"])))
    fig, cols = panels(len(datasets), 5.4, 4.2)
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(math.ceil(len(datasets) / cols), cols, i + 1)
        d = ok[ok["dataset"] == ds]
        for r in d.itertuples():
            ax.errorbar(r.params, r.mean, yerr=0 if math.isnan(r.std) else r.std, fmt=marker[r.modality],
                        color=color[r.method], ms=6, capsize=2, alpha=.85)
        front = pareto_front(list(zip(d["params"], d["mean"], strict=True)))
        ax.plot([p for p, _ in front], [a for _, a in front], "k--", lw=1)
        log_axis(ax, "x", list(d["params"].astype(float)), fm.params)
        ax.set_xlabel("trainable parameters excl. head (log)")
        ax.set_ylabel("test accuracy (%), ± std")
        ax.set_title(wrap(ds, 50), fontsize=10)
        ax.grid(alpha=.3)
    fig.tight_layout()
    handles = [Line2D([], [], color=c, marker="o", ls="", label=wrap(m, 40)) for m, c in color.items()]
    handles += [Line2D([], [], color="gray", marker=mk, ls="", label=mod) for mod, mk in marker.items()]
    legend_below(fig, handles + [Line2D([], [], color="k", ls="--", label="Pareto front")])
    return fig


def modality_figure(df: pd.DataFrame) -> Any | None:
    """Mean test accuracy per modality with its 95% CI, one bar per method, one panel per dataset."""
    from matplotlib.patches import Patch

    num = layouts.modality_layout(df).numeric
    if num.empty:
        return None
    datasets = [c[:-len(":mean")] for c in num.columns if c.endswith(":mean")]
    methods, mods = list(dict.fromkeys(num["method"])), list(dict.fromkeys(num["modality"]))
    color = colors(methods)
    # one category label is at most 14 characters a line at 8 pt (~0.75 in): give each category 0.9 in
    fig, cols = panels(len(datasets), max(4.5, 0.9 * len(mods) + 1.3), 4.0)
    width = 0.8 / max(len(methods), 1)
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(math.ceil(len(datasets) / cols), cols, i + 1)
        for j, m in enumerate(methods):
            sub = num[num["method"] == m].set_index("modality").reindex(mods)
            mean, lo, hi = sub[f"{ds}:mean"], sub[f"{ds}:ci_low"], sub[f"{ds}:ci_high"]
            err = np.vstack([(mean - lo).fillna(0).clip(lower=0), (hi - mean).fillna(0).clip(lower=0)])
            ax.bar(np.arange(len(mods)) + j * width, mean, width, yerr=err, capsize=3, color=color[m])
        ax.set_xticks(np.arange(len(mods)) + width * (len(methods) - 1) / 2, [wrap(m, 14) for m in mods],
                      fontsize=8)
        vals = num[f"{ds}:mean"].dropna()
        if len(vals):
            ax.set_ylim(max(0, vals.min() - 10), min(100, vals.max() + 5))
        ax.set_ylabel("test accuracy (%), 95% CI")
        ax.set_title(wrap(ds, 50), fontsize=10)
        ax.grid(axis="y", alpha=.3)
    fig.tight_layout()
    legend_below(fig, [Patch(color=c, label=wrap(m, 40)) for m, c in color.items()])
    return fig


def _padded(curves: list[list[float]]) -> np.ndarray:
    """Curves of different lengths (early stopping) as one array, NaN after each run's last epoch."""
    n = max(len(c) for c in curves)
    return np.array([list(c) + [math.nan] * (n - len(c)) for c in curves], dtype=float)


def curves_figure(df: pd.DataFrame, results: dict[str, Any]) -> Any | None:
    """Validation (dashed) and test (solid) accuracy per epoch: the mean of a cell's runs while they run, the
    band their range; one panel per dataset × method, four to a row."""
    ok = df[df["status"] == "success"]
    has_curves = {x for x in ok["run_id"] if (r := results.get(x)) and r.metrics and r.metrics.curves}
    ok = ok[ok["run_id"].isin(has_curves)]  # results without per-epoch curves would draw empty panels
    if ok.empty:
        return None
    cells = list(dict.fromkeys(zip(ok["dataset"], ok["method"], strict=True)))
    fig, cols = panels(len(cells), 3.8, 2.9)
    rows = math.ceil(len(cells) / cols)
    for i, (ds, m) in enumerate(cells):
        ax = fig.add_subplot(rows, cols, i + 1)
        runs = ok[(ok["dataset"] == ds) & (ok["method"] == m)]["run_id"]
        for key, style, c in (("val_acc", "--", "C0"), ("test_acc", "-", "C3")):
            curves = [r.metrics.curves for r in (results.get(x) for x in runs) if r and r.metrics]
            curves = [cv for cv in curves if cv.get(key) and cv.get("epoch")]
            if not curves:
                continue
            y = _padded([cv[key] for cv in curves]) * 100
            x = np.arange(1, y.shape[1] + 1)
            ax.plot(x, np.nanmean(y, 0), style, color=c, lw=1.4,
                    label=("val" if key == "val_acc" else "test") + f" (mean of {len(curves)})")
            ax.fill_between(x, np.nanmin(y, 0), np.nanmax(y, 0), color=c, alpha=.12)
        ax.set_title(wrap(f"{m} — {ds}", 45), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=.3)
        if i >= len(cells) - cols:
            ax.set_xlabel("epoch", fontsize=8)
        if i % cols == 0:
            ax.set_ylabel("accuracy (%)", fontsize=8)
        if i == 0 and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig


def cliques(ranks: pd.Series, cd: float) -> list[tuple[int, int]]:
    """Maximal runs of methods (sorted by rank) whose rank spread is below the critical difference."""
    r = ranks.sort_values().to_numpy()
    out: list[tuple[int, int]] = []
    for i in range(len(r)):
        j = i
        while j + 1 < len(r) and r[j + 1] - r[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in out):
            out.append((i, j))
    return out


def cd_figure(summary: pd.DataFrame) -> tuple[Any | None, str | None]:
    """The critical-difference diagram, or (None, why it cannot be drawn)."""
    f = friedman_of(summary)
    if f.note:
        return None, f.note
    ranks = f.avg_ranks.sort_values()
    k = len(ranks)
    half = (k + 1) // 2
    rows = max(half, k - half)
    fig = figure(8, 1.3 + 0.32 * rows)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(0.3, k + 0.7)
    ax.set_ylim(-(0.8 + 0.45 * rows), 1.6)
    ax.axis("off")
    ax.hlines(0, 1, k, color="k")
    for t in range(1, k + 1):
        ax.vlines(t, 0, 0.12, color="k")
        ax.text(t, 0.22, str(t), ha="center", fontsize=9)
    ax.hlines(1.0, 1, 1 + f.cd, color="r", lw=2)
    ax.text(1 + f.cd / 2, 1.15, f"CD = {f.cd:.2f}", ha="center", color="r", fontsize=9)
    for i, (m, r) in enumerate(ranks.items()):  # best half labelled on the left, worst half on the right
        left = i < half
        y = -(0.7 + 0.45 * (i if left else k - 1 - i))
        x_text = 0.9 if left else k + 0.1
        ax.plot([r, r, x_text], [0, y, y], color="k", lw=0.8)
        ax.text(x_text - 0.03 if left else x_text + 0.03, y, f"{m} ({r:.2f})", ha="right" if left else "left",
                va="center", fontsize=9)
    for n, (a, b) in enumerate(cliques(ranks, f.cd)):
        yy = -0.18 - 0.12 * n
        ax.hlines(yy, ranks.iloc[a] - 0.04, ranks.iloc[b] + 0.04, color="C0", lw=3)
    ax.set_title(wrap(f"Average ranks over {f.n_cells} cells (1 = best); Friedman p = {f.pvalue:.3g}; bars join "
                      f"methods within the Nemenyi CD (α = {f.alpha})", 100), fontsize=9)
    return fig, None
