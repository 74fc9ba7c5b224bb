"""Paper layouts of a grid's results, rendered as markdown, CSV or LaTeX (``bench table --layout L --format F``).

- ``default``: the method table with per-cell statistics, paired tests and Friedman (:mod:`peft3d.reporting.tables`).
- ``main``: the paper's main table: rows backbone / modality, columns datasets, with trainable parameters.
- ``peft``: methods × backbones on one dataset, with Δ to Any2Point (or ``versus``).
- ``modality``: language vs 2D vision vs audio, averaged over the backbones of each modality, with CIs.
- ``runs``: one row per run, flat.

Each layout is built from the runs frame only (result JSONs), as a display frame (strings: md, LaTeX) and a
numeric frame (CSV). ``reference="paper"`` adds the Any2Point paper's published figures
(:mod:`peft3d.analysis.reference`) as rows labelled with their source.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from peft3d.analysis import reference as ref
from peft3d.analysis import stats
from peft3d.reporting.tables import default_versus, fmt_params, md, paired_frame, render_markdown, summarize

LAYOUTS = ("default", "main", "peft", "modality", "runs")
FORMATS = ("md", "csv", "latex")
REFERENCES = ("paper",)
MODALITY_ORDER = ["language", "vision", "audio"]
PAPER_DATASETS = ["scanobjectnn/pb_t50_rs", "modelnet40"]
OURS = "ours"
PAPER_MARK = "n/a‡"


@dataclass
class Layout:
    name: str
    title: str
    display: pd.DataFrame
    numeric: pd.DataFrame
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- helpers

def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _f(x: Any, fmt: str = ".1f") -> str:
    return "—" if _nan(x) else format(x, fmt)


def _d(x: Any) -> str:
    return "—" if _nan(x) else f"{x:+.1f}".replace("-", "−")


def _cell(row: pd.Series | None) -> str:
    """'mean ± std' with n when fewer runs than expected (or one); an explicit blank with the reason if none."""
    if row is None:
        return "—"
    if row["n"] == 0:
        reason = " ".join(str(row["reason"]).split())
        return f"— ({reason[:40]}{'…' if len(reason) > 40 else ''})"
    s = f"{row['mean']:.1f}" + (f" ± {row['std']:.1f}" if row["n"] > 1 else "")
    return s + (f" (n={row['n']}/{row['n_expected']})" if row["n"] < row["n_expected"] or row["n"] == 1 else "")


def _same_dataset(ours: str, wanted: str) -> bool:
    """'modelnet40' matches 'modelnet40/auto'; 'scanobjectnn/pb_t50_rs' matches itself."""
    return ours == wanted or ours.split("/")[0] == wanted


def datasets_of(df: pd.DataFrame, dataset: str | None) -> list[str]:
    ds = list(dict.fromkeys(df["dataset"]))
    if dataset:
        ds = [d for d in ds if _same_dataset(d, dataset)]
        if not ds:
            from peft3d.core.errors import ConfigError

            have = ", ".join(dict.fromkeys(df["dataset"]))
            raise ConfigError(f"dataset {dataset!r} is not in this grid (it has {have})")
    return ds


def _paper_columns(datasets: list[str]) -> list[str]:
    """Paper datasets the grid lacks: shown as extra columns so the paper's figures have somewhere to go."""
    have = {ref.dataset_key(d) for d in datasets}
    return [d for d in PAPER_DATASETS if ref.dataset_key(d) not in have]


def _pick_methods(methods: list[str], method: str | None) -> list[str]:
    if method:
        if method not in methods:
            from peft3d.core.errors import ConfigError

            raise ConfigError(f"method {method!r} has no runs in this grid (it has {', '.join(methods)})")
        return [method]
    return ["any2point"] if "any2point" in methods else methods


def _modality_rank(m: str) -> int:
    return MODALITY_ORDER.index(m) if m in MODALITY_ORDER else len(MODALITY_ORDER)


def _interleave(ours: list[dict], paper: list[dict], key: Callable[[dict], Any]) -> list[dict]:
    """Each paper row right after the last row with the same key ("beside ours"); the others at the end."""
    out, rest = list(ours), []
    for p in paper:
        idx = [i for i, r in enumerate(out) if key(p) is not None and key(r) == key(p)]
        if idx:
            out.insert(idx[-1] + 1, p)
        else:
            rest.append(p)
    return out + rest


def _selection_note() -> str:
    return ("‡ " + ref.SELECTION_NOTE + "; * = with test-time voting. Paper rows: " + ref.MAIN_SOURCE + "; "
            + ref.RECHECK_SOURCE + ".")


def _binomial_note(summary: pd.DataFrame) -> str:
    parts = []
    for ds, g in summary[summary["n"] > 0].groupby("dataset", sort=False):
        p, n = g["mean"].mean() / 100, int(g["n_test"].max())
        parts.append(f"{ds} ±{100 * stats.binomial_se(p, n):.1f} pt (n_test = {n})")
    return ("Test-set binomial SE at the mean accuracy: " + "; ".join(parts) + ".") if parts else ""


# ---------------------------------------------------------------------------------------------- main

def main_layout(df: pd.DataFrame, dataset: str | None = None, method: str | None = None,
                reference: str | None = None) -> Layout:
    summary = summarize(df)
    datasets = datasets_of(df, dataset)
    chosen = _pick_methods(list(dict.fromkeys(summary["method"])), method)
    s = summary[summary["method"].isin(chosen) & summary["dataset"].isin(datasets)]
    paper = reference == "paper"
    cols = datasets + (_paper_columns(datasets) if paper else [])
    keys = s[["backbone", "weights", "method", "modality"]].drop_duplicates()
    keys = keys.assign(_o=keys["modality"].map(_modality_rank)).sort_values("_o", kind="stable")
    rows, nums = [], []
    for k in keys.itertuples():
        g = s[(s["backbone"] == k.backbone) & (s["weights"] == k.weights) & (s["method"] == k.method)]
        ok = g[g["n"] > 0]
        r = {"Modality": k.modality, "Backbone": k.backbone + ("" if k.weights == "pretrained" else f" [{k.weights}]"),
             "Method": k.method, "source": OURS, "PEFT params": fmt_params(ok["params_method"].max()),
             "Trainable excl. head": fmt_params(ok["params"].max()),
             "incl. head": fmt_params(ok["params_trainable"].max()), "_bb": k.backbone}
        n = {"_bb": k.backbone, "modality": k.modality, "backbone": k.backbone, "weights": k.weights,
             "method": k.method, "source": OURS,
             "params_method": ok["params_method"].max(), "params_trainable_excl_head": ok["params"].max(),
             "params_trainable": ok["params_trainable"].max()}
        for ds in cols:
            c = g[g["dataset"] == ds]
            row = c.iloc[0] if len(c) else None
            r[ds] = _cell(row) if ds in datasets else "—"
            for stat in ("mean", "std", "ci_low", "ci_high", "binom_se", "best_test_mean"):
                n[f"{ds}:{stat}"] = row[stat] if row is not None and row["n"] > 0 else math.nan
            if paper:
                r[f"{ds} best-on-test‡"] = _f(row["best_test_mean"]) if row is not None and row["n"] > 0 else "—"
        rows.append(r)
        nums.append(n)
    if paper:
        prows, pnums = _main_paper_rows(cols, include_prior=True)
        rows = _interleave(rows, prows, lambda r: r.get("_bb"))
        nums = _interleave(nums, pnums, lambda r: r.get("_bb"))
    display = pd.DataFrame(rows).drop(columns=["_bb"], errors="ignore")
    numeric = pd.DataFrame(nums).drop(columns=["_bb"], errors="ignore")
    notes = [f"Test accuracy (%) at the best-validation epoch, mean ± std over seeds; method: {', '.join(chosen)}. "
             "Trainable parameters: the PEFT module alone, everything trainable except the head (the paper's "
             "convention), and everything trainable.", _binomial_note(s)]
    if paper:
        notes.append(_selection_note())
    return Layout("main", "Main table: test accuracy (%) by backbone and dataset", display, numeric,
                  [n for n in notes if n])


def _main_paper_rows(cols: list[str], include_prior: bool) -> tuple[list[dict], list[dict]]:
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
            r[f"{ds} best-on-test‡"] = (_f(v) + ("*" if p.voting and ds.startswith("modelnet") else "")
                                        if v is not None else "—")
            n[f"{ds}:best_test_mean"] = v if v is not None else math.nan
        rows.append(r)
        nums.append(n)
    return rows, nums


# ---------------------------------------------------------------------------------------------- peft

def peft_layout(df: pd.DataFrame, dataset: str | None = None, versus: str | None = "any2point",
                reference: str | None = None) -> Layout:
    ds = datasets_of(df, dataset)[0]
    sub = df[df["dataset"] == ds]
    summary = summarize(sub)
    methods = list(dict.fromkeys(summary["method"]))
    versus = versus or "any2point"
    has_versus = versus in methods
    bb = summary[["backbone", "weights"]].drop_duplicates()
    multi_w = bb["weights"].nunique() > 1
    col = {(b, w): b + (f" [{w}]" if multi_w or w != "pretrained" else "") for b, w in bb.itertuples(index=False)}
    paired = paired_frame(sub, versus) if has_versus else pd.DataFrame()
    rows, nums = [], []
    for m in methods:
        g = summary[summary["method"] == m]
        r: dict[str, Any] = {"Method": m, "source": OURS, "PEFT params": fmt_params(g["params_method"].max())}
        n: dict[str, Any] = {"method": m, "source": OURS, "dataset": ds, "params_method": g["params_method"].max()}
        deltas, means = [], []
        for (b, w), name in col.items():
            c = g[(g["backbone"] == b) & (g["weights"] == w)]
            row = c.iloc[0] if len(c) else None
            v = summary[(summary["method"] == versus) & (summary["backbone"] == b) & (summary["weights"] == w)]
            delta = row["mean"] - v["mean"].iloc[0] if has_versus and row is not None and len(v) else math.nan
            r[name] = _cell(row) + (f" (Δ {_d(delta)})" if has_versus and m != versus and not _nan(delta) else "")
            pr = paired[(paired["method"] == m) & (paired["backbone"] == b) & (paired["weights"] == w)] \
                if has_versus and m != versus else pd.DataFrame()
            n.update({f"{name}:mean": row["mean"] if row is not None else math.nan,
                      f"{name}:std": row["std"] if row is not None else math.nan, f"{name}:delta": delta,
                      f"{name}:p_permutation": pr["p_permutation"].iloc[0] if len(pr) else math.nan,
                      f"{name}:prob_improvement": pr["prob_improvement"].iloc[0] if len(pr) else math.nan})
            means.append(row["mean"] if row is not None else math.nan)
            deltas.append(delta)
        r["Mean over backbones"] = _f(np.nanmean(means) if not all(map(_nan, means)) else math.nan)
        r[f"Δ to {versus}"] = _d(np.nanmean(deltas)) if has_versus and m != versus and \
            not all(map(_nan, deltas)) else "—"
        n.update(mean_over_backbones=np.nanmean(means) if not all(map(_nan, means)) else math.nan,
                 delta_mean=np.nanmean(deltas) if not all(map(_nan, deltas)) else math.nan)
        rows.append(r)
        nums.append(n)
    notes = [f"{ds}: test accuracy (%) at the best-validation epoch, mean ± std over seeds; Δ = method − {versus} "
             "on the same backbone (cell means; paired tests over seeds: `bench table` default layout, "
             "p-values in the CSV).", _binomial_note(summary)]
    if not has_versus:
        notes.append(f"No {versus} runs in this grid: Δ omitted (choose another with --versus).")
    if reference == "paper":
        prow, pnum, pnote = _peft_paper_rows(ds, col, versus)
        rows = _interleave(rows, prow, lambda r: r.get("Method"))
        nums = _interleave(nums, pnum, lambda r: r.get("method"))
        notes += [pnote, _selection_note()]
    return Layout("peft", f"PEFT methods × backbones on {ds}: test accuracy (%)", pd.DataFrame(rows),
                  pd.DataFrame(nums), [n for n in notes if n])


def _peft_paper_rows(ds: str, col: dict, versus: str) -> tuple[list[dict], list[dict], str]:
    rows, nums = [], []
    by_bb = {p.backbone: p for p in ref.any2point_rows()}
    vals = {name: ref.paper_acc(by_bb[b], ds) if b in by_bb else None for (b, _), name in col.items()}
    if any(v is not None for v in vals.values()):
        r = {"Method": "any2point", "source": "paper"}
        r.update({name: (f"{v:.1f}‡" if v is not None else "—") for name, v in vals.items()})
        rows.append(r)
        nums.append({"method": "any2point", "source": "paper", **{f"{k}:best_test": v for k, v in vals.items()}})
    exact = ref.dataset_key(ds) is not None
    for m in ref.PEFT_GAINS:
        if exact:
            txt, val = _d(ref.peft_delta(m, ds)), ref.peft_delta(m, ds)
        else:  # a dataset the paper does not cover: show its figures with their datasets named
            txt = " / ".join(f"{_d(ref.peft_delta(m, d))} ({d})" for d in PAPER_DATASETS)
            val = math.nan
        rows.append({"Method": m, "source": "paper", f"Δ to {versus}": txt})
        nums.append({"method": m, "source": "paper", "delta_mean": val,
                     **({} if exact else {f"delta:{d}": ref.peft_delta(m, d) for d in PAPER_DATASETS})})
    note = f"Paper Δ rows: {ref.PEFT_SOURCE}."
    if not exact:
        note += f" The paper has no figures for {ds}; its figures are shown with their datasets named."
    return rows, nums, note


# ---------------------------------------------------------------------------------------------- modality

def modality_layout(df: pd.DataFrame, dataset: str | None = None, method: str | None = None,
                    reference: str | None = None) -> Layout:
    datasets = datasets_of(df, dataset)
    chosen = _pick_methods(list(dict.fromkeys(df["method"])), method)
    ok = df[(df["status"] == "success") & df["method"].isin(chosen) & df["dataset"].isin(datasets)]
    paper = reference == "paper"
    cols = datasets + (_paper_columns(datasets) if paper else [])
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
                r[ds] = _f(mean) + (f" [{lo:.1f}, {hi:.1f}]" if not _nan(lo) else "")
            block.append((r, n))
        for ds in cols:  # rank modalities within the method and dataset, 1 = best
            means = pd.Series([n[f"{ds}:mean"] for _, n in block])
            for (r, n), rk in zip(block, means.rank(ascending=False, method="min"), strict=True):
                n[f"{ds}:rank"] = rk
                if ds in datasets:
                    r[f"{ds} rank"] = "—" if _nan(rk) else str(int(rk))
        block.sort(key=lambda rn: np.nanmean([rn[1][f"{d}:rank"] for d in datasets])
                   if not all(_nan(rn[1][f"{d}:rank"]) for d in datasets) else math.inf)
        rows += [r for r, _ in block]
        nums += [n for _, n in block]
    notes = [f"Method: {', '.join(chosen)}. Each modality: mean of its backbones' mean test accuracy (%) over seeds; "
             "95% CI: percentile bootstrap over the runs pooled across the modality's backbones (seeds × "
             "backbones) — with 1-2 backbones per modality it cannot capture between-backbone variance; the CSV "
             "gives each modality's backbone range. A randomly initialised backbone transfers no modality."]
    if paper:
        prow, pnum = _modality_paper_rows(cols)
        rows = _interleave(rows, prow, lambda r: (r["Method"], r["Modality"]))
        nums = _interleave(nums, pnum, lambda r: (r["method"], r["modality"]))
        notes.append("Paper rows list the paper's own per-backbone figures (it reports no modality average). "
                     + _selection_note())
    return Layout("modality", "Modality ranking: test accuracy (%) by pretraining modality", pd.DataFrame(rows),
                  pd.DataFrame(nums), notes)


def _modality_paper_rows(cols: list[str]) -> tuple[list[dict], list[dict]]:
    rows, nums = [], []
    for mod in MODALITY_ORDER:
        ps = [p for p in ref.any2point_rows() if p.modality == mod]
        r = {"Method": "any2point", "Modality": mod, "source": "paper",
             "Backbones": ", ".join(p.backbone for p in ps if p.backbone)}
        n = {"method": "any2point", "modality": mod, "source": "paper", "backbones": r["Backbones"]}
        for ds in cols:
            figs = [(p.backbone, ref.paper_acc(p, ds)) for p in ps if ref.paper_acc(p, ds) is not None]
            r[ds] = ", ".join(f"{v:.1f}‡ ({b})" for b, v in figs) or "—"
            n.update({f"{ds}:{b}": v for b, v in figs})
        rows.append(r)
        nums.append(n)
    return rows, nums


# ---------------------------------------------------------------------------------------------- runs

RUNS_NUMERIC = ["run_id", "backbone", "modality", "weights", "method", "preset", "dataset", "seed", "status",
                "test_acc", "val_acc", "test_acc_best_test", "test_acc_last", "selected_epoch", "n_test",
                "params_method", "params_trainable_excl_head", "params_trainable", "time_s", "error"]


def runs_layout(df: pd.DataFrame, dataset: str | None = None) -> Layout:
    d = df[df["dataset"].isin(datasets_of(df, dataset))]
    pct = lambda c: [_f(x * 100) if not _nan(x) else "—" for x in d[c]]  # noqa: E731
    display = pd.DataFrame({
        "run_id": d["run_id"], "backbone": d["backbone"], "modality": d["modality"], "weights": d["weights"],
        "method": d["method"], "dataset": d["dataset"], "seed": d["seed"].astype(str), "status": d["status"],
        "test": pct("test_acc"), "val": pct("val_acc"), "best-on-test†": pct("test_acc_best_test"),
        "last": pct("test_acc_last"),
        "epoch": [str(int(x)) if not _nan(x) else "—" for x in d["selected_epoch"]],
        "params excl. head": [fmt_params(x) for x in d["params_trainable_excl_head"]],
        "time (s)": [_f(x, ".0f") for x in d["time_s"]],
        "error": [(" ".join(str(e).split())[:60] if isinstance(e, str) else "") for e in d["error"]]})
    return Layout("runs", "All runs", display, d[RUNS_NUMERIC].copy(),
                  ["Accuracies in %; test = at the best-validation epoch. † optimistic (epoch selected on test)."])


# ---------------------------------------------------------------------------------------------- build / render

def build(name: str, df: pd.DataFrame, *, dataset: str | None = None, method: str | None = None,
          versus: str | None = None, reference: str | None = None) -> Layout:
    if name == "main":
        return main_layout(df, dataset, method, reference)
    if name == "peft":
        return peft_layout(df, dataset, versus or "any2point", reference)
    if name == "modality":
        return modality_layout(df, dataset, method, reference)
    if name == "runs":
        return runs_layout(df, dataset)
    raise ValueError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}")


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": "$-$", "—": "--", "–": "--", "…": r"\ldots{}",
                  "†": r"$^\dagger$", "‡": r"$^\ddagger$", "×": r"$\times$", "≥": r"$\geq$", "χ²": r"$\chi^2$",
                  "α": r"$\alpha$"}


def latex_escape(text: Any) -> str:
    s = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    for k, v in _LATEX_UNICODE.items():
        s = s.replace(k, v)
    return s


def _latex(frame: pd.DataFrame, title: str, label: str, notes: list[str]) -> str:
    f = frame.fillna("").map(latex_escape)
    f.columns = [latex_escape(c) for c in f.columns]
    body = f.to_latex(index=False, escape=False, caption=latex_escape(title), label=f"tab:{label}",
                      column_format="l" * len(f.columns))
    return body + "".join(f"% {n}\n" for n in notes)


def render(layout: Layout, fmt: str) -> str:
    if fmt == "csv":
        return _csv(layout.numeric)
    if fmt == "latex":
        return _latex(layout.display, layout.title, layout.name, layout.notes)
    if fmt == "md":
        return "\n".join([f"## {layout.title}", "", md(layout.display.fillna("")), "",
                          *[f"{n}\n" for n in layout.notes]])
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def render_default(grid: str, df: pd.DataFrame, fmt: str, versus: str | None = None,
                   reference: str | None = None) -> str:
    """The default layout: the method table with statistics (md), per-cell statistics (csv) or the method
    table (LaTeX). ``reference`` appends the paper's main-table rows."""
    from peft3d.reporting.tables import method_table

    if fmt == "md":
        text = render_markdown(grid, df, versus)
        if reference == "paper":
            rows, _ = _main_paper_rows(PAPER_DATASETS, include_prior=True)
            paper = pd.DataFrame(rows).drop(columns=["_bb", *PAPER_DATASETS], errors="ignore")
            text += "\n## Paper reference (Any2Point, arXiv 2404.07989)\n\n" + md(paper) + "\n\n" + \
                _selection_note() + "\n"
        return text
    if fmt == "csv":
        return _csv(summarize(df))
    if fmt == "latex":
        return _latex(method_table(summarize(df)), f"{grid}: test accuracy (%)", "method", [])
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def render_layout(grid: str, df: pd.DataFrame, layout: str = "default", fmt: str = "md", **opts: Any) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if opts.get("reference") not in (None, *REFERENCES):
        raise ValueError(f"unknown reference {opts['reference']!r}; choose one of {', '.join(REFERENCES)}")
    if layout == "default":
        return render_default(grid, df, fmt, opts.get("versus"), opts.get("reference"))
    return render(build(layout, df, **opts), fmt)


def default_versus_of(df: pd.DataFrame) -> str | None:
    return default_versus(list(dict.fromkeys(df["method"])))
