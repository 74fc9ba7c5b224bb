"""``bench report``: one self-contained HTML file per grid (``results/report/<grid>.html``), built only from
result JSONs: the tables (default statistics and the paper layouts) and four plots — accuracy vs trainable
parameters with the Pareto front, the modality ranking with CIs, per-method learning curves (validation and
test) and a critical-difference diagram (Friedman + Nemenyi, Demšar 2006).

Self-contained: inline CSS, plots as base64 PNGs drawn with matplotlib's Agg canvas (no pyplot state), no
scripts, no external assets, so it opens offline and can be mailed or archived as one file.
"""
from __future__ import annotations

import base64
import html
import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.core.result import RunResult, atomic_write_text, load_results
from peft3d.reporting import layouts
from peft3d.reporting.tables import friedman_of, method_table, paired_frame, stats_table, summarize
from peft3d.reporting.transfer import TITLE, has_controls, note, transfer_table

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;background:#fff;padding:0 1em}
h1{font-size:1.6em;border-bottom:2px solid #446;padding-bottom:.2em}h2{font-size:1.25em;margin-top:2em;color:#335}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#eef}tr:nth-child(even) td{background:#fafafa}
.note{color:#555;font-size:.85em;max-width:60em}.bad{color:#a00}.ok{color:#070}img{max-width:100%;
border:1px solid #ddd;margin:.5em 0}.wrap{overflow-x:auto}code{font-size:.9em}
"""


# ---------------------------------------------------------------------------------------------- plot helpers

def _figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _img(fig: Any, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(fig)}">'


def _colors(names: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(names)}


MARKERS = {"language": "o", "vision": "s", "audio": "^"}
SPARE_MARKERS = ["D", "v", "P", "X", "*"]


def _markers(modalities: list[str]) -> dict[str, str]:
    """The three paper modalities keep fixed markers; any other (e.g. "none (random init)") gets a spare one."""
    out = {m: MARKERS[m] for m in MARKERS if m in modalities}
    spare = iter(SPARE_MARKERS * 4)
    out.update({m: next(spare) for m in modalities if m not in MARKERS})
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated points (fewer parameters, higher accuracy), by increasing parameters."""
    front, best = [], -math.inf
    for p, a in sorted(points, key=lambda t: (t[0], -t[1])):
        if a > best:
            front.append((p, a))
            best = a
    return front


def plot_pareto(summary: pd.DataFrame) -> str:
    ok = summary[(summary["n"] > 0) & summary["params"].notna()]
    if ok.empty:
        return "<p class=note>No successful runs: nothing to plot.</p>"
    datasets = list(dict.fromkeys(ok["dataset"]))
    colors = _colors(list(dict.fromkeys(summary["method"])))
    markers = _markers(list(dict.fromkeys(ok["modality"])))
    fig = _figure(5.2 * len(datasets), 4.2)
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(1, len(datasets), i + 1)
        d = ok[ok["dataset"] == ds]
        for r in d.itertuples():
            ax.errorbar(r.params, r.mean, yerr=0 if math.isnan(r.std) else r.std, fmt=markers[r.modality],
                        color=colors[r.method], ms=6, capsize=2, alpha=.85)
        front = pareto_front(list(zip(d["params"], d["mean"], strict=True)))
        ax.plot([p for p, _ in front], [a for _, a in front], "k--", lw=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters excl. head")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(ds)
        ax.grid(alpha=.3)
    from matplotlib.lines import Line2D

    fig.tight_layout()
    handles = [Line2D([], [], color=c, marker="o", ls="", label=m) for m, c in colors.items()]
    handles += [Line2D([], [], color="gray", marker=mk, ls="", label=mod) for mod, mk in markers.items()]
    handles.append(Line2D([], [], color="k", ls="--", label="Pareto front"))
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    return _img(fig, "accuracy vs trainable parameters")


def plot_modality(df: pd.DataFrame) -> str:
    lay = layouts.modality_layout(df)
    num = lay.numeric
    if num.empty:
        return "<p class=note>No successful runs: nothing to plot.</p>"
    datasets = [c[:-len(":mean")] for c in num.columns if c.endswith(":mean")]
    methods = list(dict.fromkeys(num["method"]))
    fig = _figure(5.2 * len(datasets), 3.8)
    colors = _colors(methods)
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(1, len(datasets), i + 1)
        mods = list(dict.fromkeys(num["modality"]))
        width = 0.8 / max(len(methods), 1)
        for j, m in enumerate(methods):
            sub = num[num["method"] == m].set_index("modality").reindex(mods)
            mean, lo, hi = sub[f"{ds}:mean"], sub[f"{ds}:ci_low"], sub[f"{ds}:ci_high"]
            err = np.vstack([(mean - lo).fillna(0).clip(lower=0), (hi - mean).fillna(0).clip(lower=0)])
            ax.bar(np.arange(len(mods)) + j * width, mean, width, yerr=err, capsize=3, color=colors[m], label=m)
        ax.set_xticks(np.arange(len(mods)) + width * (len(methods) - 1) / 2, mods, fontsize=8)
        vals = num[f"{ds}:mean"].dropna()
        if len(vals):
            ax.set_ylim(max(0, vals.min() - 10), min(100, vals.max() + 5))
        ax.set_ylabel("test accuracy (%), 95% CI")
        ax.set_title(ds)
        ax.grid(axis="y", alpha=.3)
    fig.axes[0].legend(fontsize=8)
    return _img(fig, "modality ranking with confidence intervals")


def _curves(result: RunResult | None) -> dict[str, list[float]]:
    return result.metrics.curves if result and result.metrics else {}


def plot_curves(df: pd.DataFrame, results: dict[str, RunResult | None]) -> str:
    ok = df[df["status"] == "success"]
    if ok.empty:
        return "<p class=note>No successful runs: nothing to plot.</p>"
    datasets, methods = list(dict.fromkeys(ok["dataset"])), list(dict.fromkeys(ok["method"]))
    fig = _figure(min(3.0 * len(methods), 18), 2.6 * len(datasets))
    for i, ds in enumerate(datasets):
        for j, m in enumerate(methods):
            ax = fig.add_subplot(len(datasets), len(methods), i * len(methods) + j + 1)
            for key, style in (("val_acc", "--"), ("test_acc", "-")):
                curves = [_curves(results.get(r)) for r in ok[(ok["dataset"] == ds) & (ok["method"] == m)]["run_id"]]
                curves = [c for c in curves if c.get(key)]
                if not curves:
                    continue
                n = min(len(c[key]) for c in curves)
                y = np.array([c[key][:n] for c in curves]) * 100
                x = curves[0]["epoch"][:n]
                ax.plot(x, y.mean(0), style, color="C0" if key == "val_acc" else "C3", lw=1.4,
                        label=("val" if key == "val_acc" else "test") + f" (mean of {len(curves)})")
                ax.fill_between(x, y.min(0), y.max(0), color="C0" if key == "val_acc" else "C3", alpha=.12)
            ax.set_title(f"{m} — {ds}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=.3)
            if i == len(datasets) - 1:
                ax.set_xlabel("epoch", fontsize=8)
            if j == 0:
                ax.set_ylabel("accuracy (%)", fontsize=8)
                ax.legend(fontsize=6)
    fig.tight_layout()
    return _img(fig, "learning curves per method (validation dashed, test solid)")


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


def plot_cd(summary: pd.DataFrame) -> str:
    f = friedman_of(summary)
    if f.note:
        return f"<p class=note>Critical-difference diagram not drawn: {html.escape(f.note)}.</p>"
    ranks = f.avg_ranks.sort_values()
    k = len(ranks)
    half = (k + 1) // 2
    rows = max(half, k - half)
    fig = _figure(8, 1.3 + 0.32 * rows)
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
    ax.set_title(f"Average ranks over {f.n_cells} cells (1 = best); Friedman p = {f.pvalue:.3g}; bars join "
                 f"methods within the Nemenyi CD (α = {f.alpha})", fontsize=9)
    return _img(fig, "critical-difference diagram")


# ---------------------------------------------------------------------------------------------- html

def _table(frame: pd.DataFrame) -> str:
    frame = frame.fillna("")
    frame.columns.name = None  # a pivot's column-axis name would render as a stray header cell
    return '<div class="wrap">' + frame.to_html(index=False, border=0, escape=True) + "</div>"


def _notes(notes: list[str]) -> str:
    return "".join(f"<p class=note>{html.escape(n)}</p>" for n in notes if n)


def _layout_html(layout: layouts.Layout) -> str:
    return f"<h3>{html.escape(layout.title)}</h3>" + _table(layout.display) + _notes(layout.notes)


def _runs_html(df: pd.DataFrame) -> str:
    lay = layouts.runs_layout(df)
    rows = lay.display.copy()
    rows["run_id"] = rows["run_id"].map(lambda r: f'<code id="run-{r}">{r}</code>')
    rows["status"] = rows["status"].map(lambda s: f'<span class="{"ok" if s == "success" else "bad"}">{s}</span>')
    other = rows.drop(columns=["run_id", "status"]).map(lambda v: html.escape(str(v)))
    rows = pd.concat([rows[["run_id", "status"]], other], axis=1)
    return '<div class="wrap">' + rows.to_html(index=False, border=0, escape=False) + "</div>" + _notes(lay.notes)


def _safe(fn: Any, *args: Any) -> str:
    """A plot that cannot be drawn says why instead of failing the whole report."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the report must still render every run
        return f"<p class=bad>Plot failed: {html.escape(type(e).__name__)}: {html.escape(str(e))}</p>"


def render_report(grid: str, df: pd.DataFrame, results: dict[str, RunResult | None], reference: str | None = None,
                  extra: list[str] | None = None, versus: str | None = None) -> str:
    summary = summarize(df)
    n_ok = int((df["status"] == "success").sum())
    env = next((r.section("environment") for r in results.values() if r and r.section("environment")), {})
    parts = [f"<h1>peft3d report — {html.escape(grid)}</h1>",
             f"<p>{n_ok}/{len(df)} runs succeeded; generated {html.escape(time.strftime('%Y-%m-%d %H:%M:%S'))} "
             f"from the result JSONs only. git {html.escape(str(env.get('git_sha', '?')))}.</p>",
             _notes(["Headline: test accuracy at the epoch with the best validation accuracy (protocol.md). "
                     "Best-on-test is optimistic and never the headline. Failed or missing runs are blanks "
                     "with their reason, never numbers.", *(extra or [])]),
             *(_transfer_html(df) if has_controls(df) else []),
             "<h2>Method table</h2>", _table(method_table(summary)),
             "<h2>Per-cell statistics</h2>", _table(stats_table(summary)) if (summary["n"] > 0).any() else "",
             _notes(["95% CI: percentile bootstrap of the mean over seeds (scipy.stats.bootstrap); binom. SE: "
                     "sqrt(p(1−p)/n_test). val / train: accuracy at the selected epoch. ‡: some run of the cell "
                     "selected an epoch in the last 10% of its epochs (possibly under-trained). control: the "
                     "row is a control (random init, shuffled weights, no transformer), not a transfer result."]),
             "<h2>Paired comparisons and Friedman test</h2>", _paired_html(df, versus), _friedman_html(summary),
             "<h2>Accuracy vs trainable parameters</h2>", _safe(plot_pareto, summary),
             "<h2>Modality ranking</h2>", _safe(plot_modality, df),
             "<h2>Learning curves</h2>", _safe(plot_curves, df, results),
             "<h2>Critical-difference diagram</h2>", _safe(plot_cd, summary),
             "<h2>Paper layouts</h2>"]
    for name in ("main", "modality"):
        parts.append(_safe(lambda n: _layout_html(layouts.build(n, df, versus=versus, reference=reference)), name))
    for ds in dict.fromkeys(df["dataset"]):
        parts.append(_safe(lambda d: _layout_html(layouts.build("peft", df, dataset=d, versus=versus,
                                                                                reference=reference)), ds))
    parts += [f"<h2>All runs ({len(df)})</h2>", _runs_html(df)]
    body = "\n".join(p for p in parts if p)
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>peft3d — {html.escape(grid)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def _transfer_html(df: pd.DataFrame) -> list[str]:
    shown = transfer_table(df)
    return [] if shown.empty else [f"<h2>{html.escape(TITLE)}</h2>", _table(shown), _notes([note(df)])]


def _paired_html(df: pd.DataFrame, versus: str | None) -> str:
    pf = paired_frame(df, versus)
    usable = pf[pf["n_pairs"] >= 2]
    if usable.empty:
        return "<p class=note>Paired tests need ≥ 2 seeds with results for both methods.</p>"
    t = usable.copy()
    for c in ("delta",):
        t[c] = t[c].map(lambda x: f"{x:+.2f}")
    for c in ("p_permutation", "p_wilcoxon"):
        t[c] = t[c].map(fm.p_value)
    t["prob_improvement"] = t["prob_improvement"].map(lambda x: fm.num(x, ".3f"))
    return _table(t) + _notes([f"Δ = method − {t['versus'].iloc[0]} (points), paired by seed; two-sided paired "
                               "permutation and Wilcoxon tests; P(improvement) = Mann-Whitney U / n·m."])


def _friedman_html(summary: pd.DataFrame) -> str:
    return _notes([f"Friedman: {fm.friedman_sentence(friedman_of(summary))}"])


def write_report(grid: str, specs: list, root: Path, out: Path | None = None, reference: str | None = None,
                 extra: list[str] | None = None, versus: str | None = None) -> Path:
    from peft3d.reporting.tables import runs_frame

    df = runs_frame(specs, root)
    results = load_results(root, list(df["run_id"]))
    text = render_report(grid, df, results, reference, extra, versus)
    path = out or root / "report" / f"{grid}.html"
    atomic_write_text(path, text)
    path.chmod(0o644)  # a report is meant to be shared (the atomic temp file is created 0600)
    return path

