"""Tables built only from result JSONs. A failed or missing cell is an explicit blank with its reason,
never a number. Accuracies are overall accuracy on the official test set at the best-validation epoch.

The default table (what ``bench run`` prints) is the method table plus per-cell statistics (mean ± std,
95% bootstrap CI, the test set's binomial SE), paired comparisons between methods on the same backbone ×
dataset and a Friedman test across cells (:mod:`peft3d.analysis.stats`). Paper layouts live in
:mod:`peft3d.reporting.layouts`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.analysis import stats
from peft3d.core.result import RunResult, load_results
from peft3d.core.spec import RunSpec, default_pipeline_options
from peft3d.reporting.transfer import has_controls, transfer_markdown

RUN_COLUMNS = ["run_id", "backbone", "weights", "method", "preset", "dataset", "seed", "status", "error",
               "test_acc", "val_acc", "test_acc_best_test", "test_acc_last", "selected_epoch", "n_test",
               "params_method", "params_trainable_excl_head", "params_trainable", "params_total", "time_s",
               "step_ms", "pretrain_modality", "modality", "control", "train_acc", "epochs", "late_selection"]
LATE_FRACTION = 0.1  # protocol.md "Convergence": a selected epoch in the last 10% of epochs may be under-trained


def _registry_modality(backbone: str) -> str | None:
    try:
        from peft3d.backbones import BACKBONES

        return BACKBONES.meta(backbone).get("pretrain")
    except Exception:  # an unknown name (e.g. a result from another checkout): the result is the source
        return None


def effective_modality(pretrain: str | None, weights: str) -> str:
    """The modality a run actually transfers from: a randomly initialised backbone transfers none."""
    if weights == "random":
        return "none (random init)"
    if weights.startswith("shuffled"):
        return "none (shuffled)"
    return pretrain or "unknown"


def control_of(backbone: str, weights: str) -> str:
    """'' for a real transfer run, else which control it is (protocol.md "Controls")."""
    try:
        from peft3d.backbones import BACKBONES

        if BACKBONES.meta(backbone).get("control"):
            return "no transformer"
    except Exception:  # noqa: BLE001  (a name from another checkout is no control we know of)
        pass
    return "random init" if weights == "random" else "shuffled" if weights.startswith("shuffled") else ""


def late_selection(selected: Any, epochs: Any, stopped_early: bool = False) -> bool | None:
    """True when the selected epoch lies in the last 10% of the run's epochs (possibly under-trained). A run
    that early stopping ended (``Budget.patience``) stopped on a validation plateau: never flagged."""
    if selected is None or not epochs:
        return None
    return bool(not stopped_early and selected > (1 - LATE_FRACTION) * epochs)


def method_labels(specs: list[RunSpec]) -> dict[str, str]:
    """run_id -> the method's column label. A grid may run one method under several configurations in the
    same cell (e.g. Any2Point ``fixed`` and ``as_released``); those must never be averaged as if they were
    seeds, so each gets ``name[key=value,...]`` from the settings that differ inside its cell."""
    cells: dict[tuple, list[RunSpec]] = {}
    for s in specs:
        cells.setdefault((s.backbone, s.weights, s.dataset, s.variant, s.method), []).append(s)
    labels = {}
    default = default_pipeline_options()
    for group in cells.values():  # pipeline options that differ inside a cell are labelled like method settings
        cfgs = [dict(s.method_cfg, preset=s.preset, **_pipeline_options(s)) for s in group]
        keys = sorted({k for c in cfgs for k in c if len({repr(d.get(k)) for d in cfgs}) > 1})
        for s, c in zip(group, cfgs, strict=True):
            # a pipeline option at its default is not named, so the default run of a cell keeps the plain method
            # label and lines up with cells that ran no variant (still unique: the others differ somewhere)
            shown = [k for k in keys if not (k in default and c.get(k) == default[k])]
            labels[s.run_id] = s.method + (f"[{','.join(f'{k}={c.get(k)}' for k in shown)}]" if shown else "")
    return labels


def _pipeline_options(spec: Any) -> dict[str, Any]:
    # Spec-like records read back from stored results may predate the pipeline options (all defaults then).
    return spec.pipeline_options() if hasattr(spec, "pipeline_options") else {}


def _run_row(s: RunSpec, label: str, r: RunResult | None) -> dict[str, Any]:
    m, p, t = (r and r.metrics), (r and r.params), (r.section("time") if r else {})
    curves = (m and m.curves) or {}
    sel, n_epochs = m and m.selected_epoch, len(curves.get("epoch") or [])
    train = curves.get("train_acc") or []
    return {
        "run_id": s.run_id, "backbone": s.backbone, "weights": s.weights, "method": label, "method_name": s.method,
        "preset": s.preset, "dataset": f"{s.dataset}/{s.variant}", "seed": s.seed,
        "status": r.status if r else "missing", "error": r.error if r else "not run yet",
        "test_acc": m and m.test_acc, "val_acc": m and m.val_acc,
        "test_acc_best_test": m and m.test_acc_best_test, "test_acc_last": m and m.test_acc_last,
        "selected_epoch": sel, "n_test": m and m.n_test,
        "params_method": p and p.method, "params_trainable_excl_head": p and p.trainable_excluding_head,
        "params_trainable": p and p.trainable, "params_total": p and p.total,
        "time_s": t.get("total_s"), "step_ms": t.get("step_ms"),
        "pretrain_modality": (r and r.pretrain_modality) or _registry_modality(s.backbone),
        "control": control_of(s.backbone, s.weights),
        "train_acc": train[sel - 1] if sel and len(train) >= sel else None,
        "epochs": n_epochs or None,
        "late_selection": late_selection(sel, n_epochs, bool(r.section("stopping").get("stopped_early")))
        if r else None,
    }


def runs_frame(specs: list[RunSpec], root: Path) -> pd.DataFrame:
    """One row per expected run; ``status`` is success | failed | missing. ``method`` is the column label
    (see :func:`method_labels`); ``method_name`` the registered name."""
    results = load_results(root, [s.run_id for s in specs])
    labels = method_labels(specs)
    rows = [_run_row(s, labels[s.run_id], results[s.run_id]) for s in specs]
    df = pd.DataFrame(rows, columns=[c for c in RUN_COLUMNS if c != "modality"] + ["method_name"])
    df["modality"] = [effective_modality(p, w) for p, w in zip(df["pretrain_modality"], df["weights"], strict=True)]
    df.loc[df["control"] == "no transformer", "modality"] = "none (no transformer)"
    ok = df["status"] == "success"
    for c in ("test_acc", "val_acc", "test_acc_best_test", "test_acc_last", "train_acc"):
        df[c] = pd.to_numeric(df[c].where(ok), errors="coerce")  # failed runs never carry numbers
    return df


CELL_KEYS = ["backbone", "weights", "dataset", "method"]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per (backbone, weights, dataset, method), in accuracy points (%): mean ± std over seeds, the 95%
    bootstrap CI of the mean, the test set's binomial SE at the mean accuracy, optimistic and last-epoch means,
    and parameter counts."""
    rows = []
    for key, g in df.groupby(CELL_KEYS, sort=False, dropna=False):
        ok = g[g["status"] == "success"]
        acc = (ok["test_acc"].astype(float) * 100).tolist()
        reason = None
        if ok.empty:
            bad = g[g["status"] != "success"]
            reason = str(bad["error"].dropna().iloc[0]) if bad["error"].notna().any() else "missing"
        mean, std = stats.mean_std(acc)
        lo, hi = stats.bootstrap_ci(acc)
        n_test = ok["n_test"].max() if len(ok) else math.nan
        first = g.iloc[0]
        rows.append(dict(zip(CELL_KEYS, key, strict=True), n=len(ok), n_expected=len(g), mean=mean, std=std, ci_low=lo,
                         ci_high=hi, binom_se=100 * stats.binomial_se(mean / 100, n_test) if len(ok) else math.nan,
                         best_test_mean=(ok["test_acc_best_test"].astype(float) * 100).mean() if len(ok) else math.nan,
                         last_mean=(ok["test_acc_last"].astype(float) * 100).mean() if len(ok) else math.nan,
                         n_test=n_test,
                         params=ok["params_trainable_excl_head"].max() if len(ok) else math.nan,
                         params_method=ok["params_method"].max() if len(ok) else math.nan,
                         params_trainable=ok["params_trainable"].max() if len(ok) else math.nan,
                         modality=first.get("modality"), reason=reason, control=first.get("control", ""),
                         train_mean=(ok["train_acc"].astype(float) * 100).mean() if len(ok) else math.nan,
                         val_mean=(ok["val_acc"].astype(float) * 100).mean() if len(ok) else math.nan,
                         n_late=int((ok["late_selection"] == True).sum()) if len(ok) else 0))  # noqa: E712
    return pd.DataFrame(rows)


def default_versus(methods: list[str]) -> str | None:
    """The method the others are compared with when neither the grid (``compare_to``) nor the command line
    names one: the first method (the grid's order)."""
    return methods[0] if methods else None


def paired_frame(df: pd.DataFrame, versus: str | None = None) -> pd.DataFrame:
    """Each method vs ``versus`` on the same backbone × weights × dataset, paired by seed (successful pairs only).
    Accuracy points; ``delta`` = method − versus."""
    methods = list(dict.fromkeys(df["method"]))
    versus = versus or default_versus(methods)
    ok = df[df["status"] == "success"]
    rows = []
    for key, g in ok.groupby(["backbone", "weights", "dataset"], sort=False):
        wide = g.pivot_table(index="seed", columns="method", values="test_acc", aggfunc="first") * 100
        if versus not in wide:
            continue
        for m in [m for m in methods if m != versus and m in wide]:
            pair = wide[[m, versus]].dropna()
            r = stats.paired_compare(pair[m].to_numpy(), pair[versus].to_numpy())
            rows.append(dict(zip(["backbone", "weights", "dataset"], key, strict=True), method=m, versus=versus,
                             n_pairs=r.n,
                             delta=r.mean_diff, p_permutation=r.p_permutation, p_wilcoxon=r.p_wilcoxon,
                             prob_improvement=r.prob_improvement))
    return pd.DataFrame(rows, columns=["backbone", "weights", "dataset", "method", "versus", "n_pairs", "delta",
                                       "p_permutation", "p_wilcoxon", "prob_improvement"])


def friedman_of(summary: pd.DataFrame) -> stats.Friedman:
    """Friedman test over cells (backbone × weights × dataset) with methods as treatments (cell means)."""
    matrix = summary.pivot_table(index=["backbone", "weights", "dataset"], columns="method", values="mean",
                                 aggfunc="first", sort=False)
    return stats.friedman(matrix.reindex(columns=list(dict.fromkeys(summary["method"]))))








def stats_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per-cell statistics, long form, display strings."""
    ok = summary[summary["n"] > 0]
    return pd.DataFrame({
        "backbone": ok["backbone"], "weights": ok["weights"], "dataset": ok["dataset"], "method": ok["method"],
        "n": [f"{n}/{e}" for n, e in zip(ok["n"], ok["n_expected"], strict=True)],
        "mean ± std": [fm.num(m) + (f" ± {s:.1f}" if not math.isnan(s) else "")
                       for m, s in zip(ok["mean"], ok["std"], strict=True)],
        "95% CI": [f"[{lo:.1f}, {hi:.1f}]" if not math.isnan(lo) else "— (n<2)" for lo, hi in
                   zip(ok["ci_low"], ok["ci_high"], strict=True)],
        "binom. SE": ok["binom_se"].map(fm.num), "best-on-test†": ok["best_test_mean"].map(fm.num),
        "last epoch": ok["last_mean"].map(fm.num), "val": ok["val_mean"].map(fm.num),
        "train": ok["train_mean"].map(fm.num),
        "late sel.‡": [f"{k}/{n}" for k, n in zip(ok["n_late"], ok["n"], strict=True)],
        "control": ok["control"]})






def paired_markdown(df: pd.DataFrame, versus: str | None = None) -> list[str]:
    pf = paired_frame(df, versus)
    versus = versus or default_versus(list(dict.fromkeys(df["method"])))
    head = f"### Paired comparisons vs {versus} (same backbone × weights × dataset, paired by seed)"
    usable = pf[pf["n_pairs"] >= 2]
    if usable.empty:
        most = int(pf["n_pairs"].max()) if len(pf) else 0
        return [head, "", f"Not computed: paired tests need ≥ 2 seeds with results for both methods "
                          f"(at most {most} here)."]
    t = pd.DataFrame({"backbone": usable["backbone"], "weights": usable["weights"], "dataset": usable["dataset"],
                      "method": usable["method"], "pairs": usable["n_pairs"],
                      "Δ (pt)": usable["delta"].map(fm.signed),
                      "p (permutation)": usable["p_permutation"].map(fm.p_value),
                      "p (Wilcoxon)": usable["p_wilcoxon"].map(fm.p_value),
                      "P(improvement)": usable["prob_improvement"].map(lambda x: fm.num(x, ".2f"))})
    return [head, "", fm.markdown(t), "",
            "Δ = method − " + str(versus) + ". Two-sided paired permutation test (sign flips, exact for few seeds: "
            "with 3 seeds p ≥ 0.25) and Wilcoxon signed-rank test; P(improvement) = P(method run > "
            f"{versus} run) (Mann-Whitney U / n·m)."]


def friedman_markdown(summary: pd.DataFrame) -> list[str]:
    return ["### Friedman test across cells", "", fm.friedman_sentence(friedman_of(summary))]








def method_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows backbone×weights×dataset, one column per method (test accuracy %), plus params rows' table."""
    s = summary.assign(cell=summary.apply(fm.cell, axis=1))
    wide = s.pivot_table(index=["backbone", "weights", "dataset"], columns="method", values="cell",
                         aggfunc="first", sort=False)
    methods = list(dict.fromkeys(summary["method"]))
    out = wide.reindex(columns=methods).reset_index()
    controls = summary.drop_duplicates(["backbone", "weights"]).set_index(["backbone", "weights"])["control"]
    if controls.astype(bool).any():  # label the controls (protocol.md: a modality claim must beat them)
        out.insert(2, "control", [controls.get((b, w), "") for b, w in zip(out["backbone"], out["weights"],
                                                                            strict=True)])
    return out


def params_table(summary: pd.DataFrame) -> pd.DataFrame:
    s = summary.assign(p=summary["params"].map(fm.params))
    wide = s.pivot_table(index=["backbone"], columns="method", values="p", aggfunc="first", sort=False)
    return wide.reindex(columns=list(dict.fromkeys(summary["method"]))).reset_index()


def noise_floor(summary: pd.DataFrame) -> str:
    ok = summary[summary["n"] > 0]
    if ok.empty:
        return ""
    p = ok["mean"].mean() / 100
    n = int(ok["n_test"].max())
    se = math.sqrt(p * (1 - p) / n) * 100
    return (f"Test-set sampling noise: binomial SE ≈ {se:.1f} pt at {100 * p:.0f}% accuracy with n_test = {n}; "
            f"differences smaller than ~2 SE ({2 * se:.1f} pt) are not evidence.")


def render_markdown(grid: str, df: pd.DataFrame, versus: str | None = None) -> str:
    summary = summarize(df)
    n_ok, n_all = int((df["status"] == "success").sum()), len(df)
    parts = [f"# {grid}: test accuracy (%)", "",
             "Overall accuracy on the test set at the epoch with the best validation accuracy; mean ± std "
             "over seeds (n = successful/expected runs).", "",
             *(transfer_markdown(df) if has_controls(df) else []),
             method_table(summary).to_markdown(index=False), "", noise_floor(summary), "",
             "## Trainable parameters (excluding the head)", "", params_table(summary).to_markdown(index=False), ""]
    if (summary["n"] > 0).any():
        parts += ["## Statistics", "", fm.markdown(stats_table(summary)), "",
                  "95% CI: percentile bootstrap of the mean over seeds (scipy.stats.bootstrap). binom. SE: the "
                  "test set's own sampling noise, sqrt(p(1−p)/n_test). † best-on-test is optimistic (epoch "
                  "selected on test, as papers do) and never the headline. val / train: accuracy at the selected "
                  "epoch. ‡ late sel.: runs whose selected epoch lies in the last 10% of their epochs "
                  "(possibly under-trained; the cell is marked ‡ in the table above).", "",
                  *paired_markdown(df, versus), "", *friedman_markdown(summary), ""]
    parts.append(f"{n_ok}/{n_all} runs succeeded.")
    failed = df[df["status"] != "success"]
    if len(failed):
        parts += ["", "## Not in the table", ""]
        parts += [f"- `{r.run_id}` {r.backbone}[{r.weights}]/{r.method}/{r.dataset}/s{r.seed}: {r.status} — "
                  f"{fm.short(r.error, 200)}" for r in failed.itertuples()]
    return "\n".join(parts) + "\n"

