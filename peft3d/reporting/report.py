"""``bench report``: one self-contained HTML file per grid (``results/report/<grid>.html``), built only from
result JSONs: the tables (default statistics, parameter accounting, the paper layouts) and the plots of
:mod:`peft3d.reporting.figures` — accuracy vs trainable parameters with the Pareto front, the modality ranking
with CIs, learning curves and a critical-difference diagram — plus, when the grid has them, the data-efficiency
curve of its few-label folds (:mod:`peft3d.reporting.efficiency`) and, for a tuned grid, the learning-rate
sensitivity of every arm's study (:mod:`peft3d.reporting.sensitivity`). Every figure passes the legibility check
of :mod:`peft3d.reporting.canvas` on its way in.

Self-contained: inline CSS, plots as base64 PNGs drawn with matplotlib's Agg canvas (no pyplot state), no
scripts, no external assets, so it opens offline and can be mailed or archived as one file.
"""
from __future__ import annotations

import html
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.core.result import RunResult, atomic_write_text, load_results
from peft3d.reporting import cost, efficiency, figures, layouts, modalities, sensitivity
from peft3d.reporting.canvas import img
from peft3d.reporting.folds import CORRECTED_NOTE, TUNED_ON_FOLDS, folds_note, replicates, tuned_on_folds, unit
from peft3d.reporting.tables import (
    PARAMS_NOTE,
    REMEASURED_NOTE,
    TUNED_NOTE,
    VAL_TRAIN_NOTE,
    friedman_of,
    method_table,
    paired_frame,
    params_table,
    stats_table,
    summarize,
    tuned_table,
)
from peft3d.reporting.transfer import TITLE, has_controls, note, resolution_note, transfer_frame, transfer_table

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;background:#fff;padding:0 1em}
h1{font-size:1.6em;border-bottom:2px solid #446;padding-bottom:.2em}h2{font-size:1.25em;margin-top:2em;color:#335}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#eef}tr:nth-child(even) td{background:#fafafa}
.note{color:#555;font-size:.85em;max-width:60em}.bad{color:#a00}.ok{color:#070}img{max-width:100%;
border:1px solid #ddd;margin:.5em 0}.wrap{overflow-x:auto}code{font-size:.9em}
"""


# ---------------------------------------------------------------------------------------------- plots

NOTHING = "<p class=note>No successful runs: nothing to plot.</p>"


def _plot(fig: Any, alt: str, empty: str = NOTHING) -> str:
    return img(fig, alt) if fig is not None else empty


def plot_pareto(summary: pd.DataFrame) -> str:
    return _plot(figures.pareto_figure(summary), "accuracy vs trainable parameters")


def plot_modality(df: pd.DataFrame) -> str:
    return _plot(figures.modality_figure(df), "modality ranking with confidence intervals")


def plot_curves(df: pd.DataFrame, results: dict[str, RunResult | None]) -> str:
    return _plot(figures.curves_figure(df, results), "learning curves per method (validation dashed, test solid)",
                 "<p class=note>No per-epoch curves in these results: no learning curves to plot.</p>")


def plot_cd(summary: pd.DataFrame) -> str:
    fig, why = figures.cd_figure(summary)
    return _plot(fig, "critical-difference diagram",
                 f"<p class=note>Critical-difference diagram not drawn: {html.escape(str(why))}.</p>")


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


def code_versions(results: dict[str, RunResult | None]) -> str:
    """Which code the runs ran with (``environment.git_sha``): a study resumed over sessions spans several
    commits, and naming only one would misattribute the others' runs."""
    shas = Counter(_short_sha((r.section("environment") or {}).get("git_sha"))
                   for r in results.values() if r is not None)
    if len(shas) <= 1:
        return f"git {next(iter(shas), '?')}"
    return f"code of {len(shas)} commits (runs each): " + _runs_each(shas)


def _runs_each(counts: Counter) -> str:
    return ", ".join(f"{name} ({n})" for name, n in counts.most_common())


def hardware(results: dict[str, RunResult | None]) -> str:
    """Where the runs ran: the GPU for CUDA runs, else the CPU and its kernels' instruction set
    (``environment.cpu``). Named because the same seed trains differently on another kind of processor
    (docs/protocol.md "What a seed fixes"), so a reader of a pooled study should see that it spans several."""
    def where(env: dict) -> str:
        device = str(env.get("device") or "")
        return device if device.startswith("cuda") else (env.get("cpu") or "CPU not recorded")

    kinds = Counter(where(r.section("environment") or {}) for r in results.values() if r is not None)
    if len(kinds) <= 1:
        return f"ran on {next(iter(kinds), '?')}"
    return f"ran on {len(kinds)} kinds of hardware (runs each): " + _runs_each(kinds)


def _short_sha(sha: str | None) -> str:
    """12 hex digits, keeping ``-dirty`` (code with uncommitted changes must stay visible as such)."""
    if not sha:
        return "?"
    return sha[:12] + ("-dirty" if sha.endswith("-dirty") else "")


def render_report(grid: str, df: pd.DataFrame, results: dict[str, RunResult | None], reference: str | None = None,
                  extra: list[str] | None = None, versus: str | None = None,
                  manifest: dict[str, Any] | None = None) -> str:
    """The report's HTML. ``manifest``: the grid's ``bench tune`` manifest (a tuned report), whose trials give
    the learning-rate sensitivity section."""
    summary = summarize(df)
    n_ok = int((df["status"] == "success").sum())
    parts = [f"<h1>peft3d report — {html.escape(grid)}</h1>",
             f"<p>{n_ok}/{len(df)} runs succeeded; generated {html.escape(time.strftime('%Y-%m-%d %H:%M:%S'))} "
             f"from the result JSONs only. {html.escape(code_versions(results))}; "
             f"{html.escape(hardware(results))}.</p>",
             _notes(["Headline: test accuracy at the epoch with the best validation accuracy (protocol.md). "
                     "Best-on-test is optimistic and never the headline. Failed or missing runs are blanks "
                     "with their reason, never numbers.", *(extra or []), folds_note(df)]),
             *(_transfer_html(df) if has_controls(df) else []),
             *(_sensitivity_html(manifest) if manifest else []),
             *(_efficiency_html(df) if efficiency.has_curve(df) else []),
             "<h2>Method table</h2>", _table(method_table(summary)),
             "<h2>Per-cell statistics</h2>", _table(stats_table(summary)) if (summary["n"] > 0).any() else "",
             _notes([f"95% CI: percentile bootstrap of the mean over {replicates(df)} (scipy.stats.bootstrap); "
                     "binom. SE: sqrt(p(1−p)/n_test), a k-fold cell's over its pooled test set. " + VAL_TRAIN_NOTE
                     + " ‡: some run of the cell selected an epoch in the last 10% of "
                     "its epochs (possibly under-trained). control: the row is a control (random init, shuffled "
                     "weights, no transformer), not a transfer result."]),
             *_tuned_html(df, summary),
             "<h2>Trainable parameters</h2>", _table(params_table(summary)), _notes([PARAMS_NOTE]),
             *_cost_html(df),
             "<h2>Paired comparisons and Friedman test</h2>", _paired_html(df, versus), _friedman_html(summary),
             "<h2>Accuracy vs trainable parameters</h2>", _safe(plot_pareto, summary),
             "<h2>Modality ranking</h2>", _safe(plot_modality, df),
             "<h2>Learning curves</h2>", _safe(plot_curves, df, results),
             "<h2>Critical-difference diagram</h2>", _safe(plot_cd, summary),
             "<h2>Paper layouts</h2>", *_layouts_html(df, versus, reference),
             f"<h2>All runs ({len(df)})</h2>", _runs_html(df)]
    body = "\n".join(p for p in parts if p)
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>peft3d — {html.escape(grid)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def _layouts_html(df: pd.DataFrame, versus: str | None, reference: str | None) -> list[str]:
    parts = [_safe(lambda n: _layout_html(layouts.build(n, df, versus=versus, reference=reference)), name)
             for name in ("main", "modality")]
    for ds in dict.fromkeys(df["dataset"]):
        parts.append(_safe(lambda d: _layout_html(layouts.build("peft", df, dataset=d, versus=versus,
                                                                reference=reference)), ds))
    return parts


def _transfer_html(df: pd.DataFrame) -> list[str]:
    tf = transfer_frame(df)
    shown, versus = transfer_table(df, tf), modalities.modality_table(df)
    out = [] if shown.empty else [f"<h2>{html.escape(TITLE)}</h2>", _table(shown),
                                  _notes([note(df), resolution_note(tf)])]
    return out + ([] if versus.empty else [f"<h2>{html.escape(modalities.TITLE)}</h2>", _table(versus),
                                           _notes([modalities.note(df)])])


def _cost_html(df: pd.DataFrame) -> list[str]:
    table = cost.cost_table(df)
    return [] if table.empty else [f"<h2>{cost.COST_TITLE}</h2>", _table(table), _notes([cost.COST_NOTE])]


def _tuned_html(df: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    t = tuned_table(summary, df)
    return [] if t.empty else ["<h2>Tuned configuration per cell</h2>", _table(t),
                               _notes([TUNED_NOTE, REMEASURED_NOTE if "optimism" in t else "",
                                       TUNED_ON_FOLDS if tuned_on_folds(df) else ""])]


def _sensitivity_html(manifest: dict[str, Any]) -> list[str]:
    trials = sensitivity.trials_frame(manifest)
    if trials.empty:
        return ["<h2>Learning-rate sensitivity</h2>",
                _notes(["The tuning manifest records no trials per study (written by an older bench tune): "
                        "re-run 'bench tune' to record them."])]
    flips = sensitivity.flips_frame(trials)
    shown = pd.DataFrame({
        "method": flips["method"], "dataset": flips["dataset"], "backbone": flips["backbone"],
        "pretrained ahead at": [f"{a}/{n} shared points" for a, n in zip(flips["pretrained_ahead"], flips["points"],
                                                                         strict=True)],
        "Δ val range (pt)": [f"{fm.signed(lo)} … {fm.signed(hi)}" for lo, hi in zip(flips["delta_min"],
                                                                                   flips["delta_max"], strict=True)],
        "Δ val at chosen (pt)": flips["delta_chosen"].map(fm.signed)})
    return ["<h2>Learning-rate sensitivity</h2>",
            _safe(lambda t: _plot(sensitivity.sensitivity_figure(t), "learning-rate sensitivity per arm",
                                  "<p class=note>No complete or pruned trial to plot.</p>"), trials),
            _table(shown) if len(shown) else "", _notes([sensitivity.NOTE])]


def _efficiency_html(df: pd.DataFrame) -> list[str]:
    frame = efficiency.efficiency_frame(df)
    return ["<h2>Data efficiency: accuracy vs labelled models per class</h2>",
            _safe(lambda f: _plot(efficiency.efficiency_figure(f), "data-efficiency curve"), frame),
            _table(efficiency.efficiency_table(frame)), _notes([efficiency.NOTE])]


def _paired_html(df: pd.DataFrame, versus: str | None) -> str:
    pf = paired_frame(df, versus)
    usable = pf[pf["n_pairs"] >= 2]
    if usable.empty:
        return f"<p class=note>Paired tests need ≥ 2 {replicates(df)} with results for both methods.</p>"
    t = usable.copy()
    for c in ("delta",):
        t[c] = t[c].map(lambda x: f"{x:+.2f}")
    folds = t["p_folds"].notna().any()
    if not folds:
        t = t.drop(columns="p_folds")  # no k-fold cell here: the conservative p does not apply
    for c in [c for c in ("p_permutation", "p_wilcoxon", "p_folds") if c in t]:
        t[c] = t[c].map(fm.p_value)
    t["prob_improvement"] = t["prob_improvement"].map(lambda x: fm.num(x, ".3f"))
    return _table(t) + _notes([f"Δ = method − {t['versus'].iloc[0]} (points), paired by {unit(df)}; two-sided "
                               "paired permutation and Wilcoxon tests; P(improvement) = Mann-Whitney U / n·m." +
                               (f" {CORRECTED_NOTE}." if folds else "")])


def _friedman_html(summary: pd.DataFrame) -> str:
    return _notes([f"Friedman: {fm.friedman_sentence(friedman_of(summary))}"])


def write_report(grid: str, specs: list, root: Path, out: Path | None = None, reference: str | None = None,
                 extra: list[str] | None = None, versus: str | None = None,
                 manifest: dict[str, Any] | None = None) -> Path:
    from peft3d.reporting.tables import runs_frame

    df = runs_frame(specs, root)
    results = load_results(root, list(df["run_id"]))
    text = render_report(grid, df, results, reference, extra, versus, manifest)
    path = out or root / "report" / f"{grid}.html"
    atomic_write_text(path, text)
    path.chmod(0o644)  # a report is meant to be shared (the atomic temp file is created 0600)
    return path
