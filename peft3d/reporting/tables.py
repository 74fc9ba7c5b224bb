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
from peft3d.core.result import RunResult, load_results, wall_seconds
from peft3d.core.spec import RunSpec, default_pipeline_options
from peft3d.core.studies import log_uniform_bounds
from peft3d.reporting.cost import cost_markdown
from peft3d.reporting.folds import (
    CORRECTED_NOTE,
    TUNED_ON_FOLDS,
    Pooling,
    fold_corrected_p,
    folds_note,
    is_pooled,
    permutation_note,
    pooled_n_test,
    pooling,
    replicate_keys,
    replicates,
    test_train_ratio,
    tuned_on_folds,
    unit,
)
from peft3d.reporting.modalities import modality_markdown
from peft3d.reporting.objective import remeasured
from peft3d.reporting.transfer import arm_config, has_controls, transfer_markdown

RUN_COLUMNS = ["run_id", "backbone", "weights", "method", "preset", "dataset", "run_dataset", "fold", "per_class",
               "full_dataset", "seed", "status", "error", "test_acc", "val_acc", "test_acc_best_test",
               "test_acc_last", "selected_epoch", "n_test", "n_folds", "params_method", "params_trainable_excl_head",
               "params_trainable", "params_total", "params_shared", "params_head", "params_backbone", "lr",
               "weight_decay", "tuned", "tune_objective", "tune_study", "lr_edge", "lr_range", "time_s", "step_ms",
               "pretrain_modality", "modality", "control", "train_acc", "epochs", "late_selection"]
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


def _run_row(s: RunSpec, label: str, r: RunResult | None, pool: Pooling) -> dict[str, Any]:
    m, time = (r and r.metrics), (r.section("time") if r else {})
    curves = (m and m.curves) or {}
    sel, n_epochs = m and m.selected_epoch, len(curves.get("epoch") or [])
    train = curves.get("train_acc") or []
    return {
        "run_id": s.run_id, "backbone": s.backbone, "weights": s.weights, "method": label, "method_name": s.method,
        "preset": s.preset, "dataset": pool.dataset, "run_dataset": f"{s.dataset}/{s.variant}", "fold": pool.fold,
        "per_class": pool.per_class, "full_dataset": pool.full, "seed": s.seed,
        "status": r.status if r else "missing", "error": r.error if r else "not run yet",
        "test_acc": m and m.test_acc, "val_acc": m and m.val_acc,
        "test_acc_best_test": m and m.test_acc_best_test, "test_acc_last": m and m.test_acc_last,
        "selected_epoch": sel, "n_test": m and m.n_test, "n_folds": pool.n_folds, **_param_columns(r),
        **_tuning_columns(r),
        "time_s": wall_seconds(time), "step_ms": time.get("step_ms"),
        "pretrain_modality": (r and r.pretrain_modality) or _registry_modality(s.backbone),
        "control": control_of(s.backbone, s.weights),
        "train_acc": train[sel - 1] if sel and len(train) >= sel else None,
        "epochs": n_epochs or None,
        "late_selection": late_selection(sel, n_epochs, bool(r.section("stopping").get("stopped_early")))
        if r else None,
    }


def _param_columns(r: RunResult | None) -> dict[str, Any]:
    """The result's parameter accounting (``training``'s param_groups): the method's own trainable parameters,
    the shared tokenizer / positional encoding / norms, the head, and the backbone's blocks before the method
    added to them (``blocks``; absent in older results)."""
    p = r and r.params
    extra = (p and p.extra) or {}
    return {"params_method": p and p.method, "params_trainable_excl_head": p and p.trainable_excluding_head,
            "params_trainable": p and p.trainable, "params_total": p and p.total,
            "params_shared": extra.get("shared"), "params_head": extra.get("head"),
            "params_backbone": extra.get("blocks")}


def _tuning_columns(r: RunResult | None) -> dict[str, Any]:
    """The learning rate and weight decay the run trained with, and whether ``bench tune`` chose them (the
    result's ``tuning`` block, with the study's best validation objective)."""
    budget = (r.spec.get("budget") if r else None) or {}
    tuning = r.section("tuning") if r else {}
    return {"lr": budget.get("lr"), "weight_decay": budget.get("weight_decay"), "tuned": bool(tuning),
            "tune_objective": tuning.get("best_value"), "tune_study": tuning.get("study"),
            "lr_edge": lr_at_edge(budget.get("lr"), (tuning.get("space") or {}).get("lr")),
            "lr_range": _range_text((tuning.get("space") or {}).get("lr"))}


def _range_text(space: str | None) -> str | None:
    """"log-uniform [0.0003, 0.03]" -> "3.0e-04..3.0e-02" (the lr column's format): the searched lr range."""
    bounds = log_uniform_bounds(space)
    return None if bounds is None else f"{fm.sci(bounds[0])}..{fm.sci(bounds[1])}"


EDGE_FRACTION = 0.1  # a chosen lr in the outer tenth of the log range: the optimum may lie outside it


def lr_at_edge(lr: float | None, space: str | None) -> bool | None:
    """Whether the chosen lr sits in the outer EDGE_FRACTION (log scale) of the study's lr range, as the result's
    ``tuning.space`` records it ("log-uniform [lo, hi]"); None when either is unknown."""
    bounds = log_uniform_bounds(space)
    if lr is None or bounds is None:
        return None
    lo, hi = bounds
    pos = math.log(lr / lo) / math.log(hi / lo)
    return pos < EDGE_FRACTION or pos > 1 - EDGE_FRACTION


def runs_frame(specs: list[RunSpec], root: Path) -> pd.DataFrame:
    """One row per expected run; ``status`` is success | failed | missing. ``method`` is the column label
    (see :func:`method_labels`); ``method_name`` the registered name. ``dataset`` is the cell's dataset: the
    folds of a declared k-fold partition share one (:mod:`peft3d.reporting.folds`); ``run_dataset`` is the
    run's own and ``fold`` its fold ('' for a plain dataset)."""
    results = load_results(root, [s.run_id for s in specs])
    labels = method_labels(specs)
    pools = pooling(specs)
    rows = [_run_row(s, labels[s.run_id], results[s.run_id], pools[(s.dataset, s.variant)]) for s in specs]
    df = pd.DataFrame(rows, columns=[c for c in RUN_COLUMNS if c != "modality"] + ["method_name"])
    df["modality"] = [effective_modality(p, w) for p, w in zip(df["pretrain_modality"], df["weights"], strict=True)]
    df.loc[df["control"] == "no transformer", "modality"] = "none (no transformer)"
    ok = df["status"] == "success"
    for c in ("test_acc", "val_acc", "test_acc_best_test", "test_acc_last", "train_acc"):
        df[c] = pd.to_numeric(df[c].where(ok), errors="coerce")  # failed runs never carry numbers
    return df


CELL_KEYS = ["backbone", "weights", "dataset", "method"]
SUMMARY_COLUMNS = [*CELL_KEYS, "n", "n_expected", "mean", "std", "ci_low", "ci_high", "binom_se", "best_test_mean",
                   "last_mean", "n_test", "params", "params_method", "params_trainable", "modality", "reason",
                   "control", "train_mean", "val_mean", "n_late", "params_shared", "params_head", "params_backbone",
                   "lr", "weight_decay", "tuned", "tune_objective", "tune_study", "lr_edge", "lr_range"]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per (backbone, weights, dataset, method), in accuracy points (%): mean ± std over the cell's replicates
    (seeds; (fold, seed) on a k-fold dataset), the 95% bootstrap CI of the mean, the binomial SE of the cell's
    test set at the mean accuracy (a k-fold cell's pooled test set), optimistic and last-epoch means, parameter
    counts and the learning rate / weight decay the runs trained with."""
    rows = []
    for key, g in df.groupby(CELL_KEYS, sort=False, dropna=False):
        ok = g[g["status"] == "success"]
        reason = None
        if ok.empty:
            bad = g[g["status"] != "success"]
            reason = str(bad["error"].dropna().iloc[0]) if bad["error"].notna().any() else "missing"
        first = g.iloc[0]
        rows.append(dict(zip(CELL_KEYS, key, strict=True), **_accuracy_stats(ok), n_expected=len(g),
                         **_cell_params(ok), **arm_config(ok), modality=first.get("modality"), reason=reason,
                         control=first.get("control", "")))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _pct_mean(ok: pd.DataFrame, col: str) -> float:
    return float((ok[col].astype(float) * 100).mean()) if len(ok) and col in ok else math.nan


def _accuracy_stats(ok: pd.DataFrame) -> dict[str, Any]:
    acc = (ok["test_acc"].astype(float) * 100).tolist()
    mean, std = stats.mean_std(acc)
    lo, hi = stats.bootstrap_ci(acc)
    n_test = pooled_n_test(ok)
    return {"n": len(ok), "mean": mean, "std": std, "ci_low": lo, "ci_high": hi,
            "binom_se": 100 * stats.binomial_se(mean / 100, n_test) if len(ok) else math.nan,
            "best_test_mean": _pct_mean(ok, "test_acc_best_test"), "last_mean": _pct_mean(ok, "test_acc_last"),
            "n_test": n_test, "train_mean": _pct_mean(ok, "train_acc"), "val_mean": _pct_mean(ok, "val_acc"),
            "n_late": int((ok["late_selection"] == True).sum()) if len(ok) else 0}  # noqa: E712


def _max(ok: pd.DataFrame, col: str) -> float:
    return ok[col].max() if len(ok) and col in ok else math.nan


def _cell_params(ok: pd.DataFrame) -> dict[str, Any]:
    return {"params": _max(ok, "params_trainable_excl_head"), "params_method": _max(ok, "params_method"),
            "params_trainable": _max(ok, "params_trainable"), "params_shared": _max(ok, "params_shared"),
            "params_head": _max(ok, "params_head"), "params_backbone": _max(ok, "params_backbone")}


def default_versus(methods: list[str]) -> str | None:
    """The method the others are compared with when neither the grid (``compare_to``) nor the command line
    names one: the first method (the grid's order)."""
    return methods[0] if methods else None


def paired_frame(df: pd.DataFrame, versus: str | None = None) -> pd.DataFrame:
    """Each method vs ``versus`` on the same backbone × weights × dataset, paired by replicate (seed; (fold, seed)
    on a k-fold dataset), successful pairs only. Accuracy points; ``delta`` = method − versus."""
    methods = list(dict.fromkeys(df["method"]))
    versus = versus or default_versus(methods)
    ok = df[df["status"] == "success"]
    rows = []
    for key, g in ok.groupby(["backbone", "weights", "dataset"], sort=False):
        wide = g.pivot_table(index=replicate_keys(g), columns="method", values="test_acc", aggfunc="first") * 100
        if versus not in wide:
            continue
        for m in [m for m in methods if m != versus and m in wide]:
            pair = wide[[m, versus]].dropna()
            r = stats.paired_compare(pair[m].to_numpy(), pair[versus].to_numpy())
            p_folds = fold_corrected_p(pair[m], pair[versus], test_train_ratio(g)) if is_pooled(g) else math.nan
            rows.append(dict(zip(["backbone", "weights", "dataset"], key, strict=True), method=m, versus=versus,
                             n_pairs=r.n,
                             delta=r.mean_diff, p_permutation=r.p_permutation, p_wilcoxon=r.p_wilcoxon,
                             p_folds=p_folds, prob_improvement=r.prob_improvement))
    return pd.DataFrame(rows, columns=["backbone", "weights", "dataset", "method", "versus", "n_pairs", "delta",
                                       "p_permutation", "p_wilcoxon", "p_folds", "prob_improvement"])


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
    head = f"### Paired comparisons vs {versus} (same backbone × weights × dataset, paired by {unit(df)})"
    usable = pf[pf["n_pairs"] >= 2]
    if usable.empty:
        most = int(pf["n_pairs"].max()) if len(pf) else 0
        return [head, "", f"Not computed: paired tests need ≥ 2 {replicates(df)} with results for both methods "
                          f"(at most {most} here)."]
    t = pd.DataFrame({"backbone": usable["backbone"], "weights": usable["weights"], "dataset": usable["dataset"],
                      "method": usable["method"], "pairs": usable["n_pairs"],
                      "Δ (pt)": usable["delta"].map(fm.signed),
                      "p (permutation)": usable["p_permutation"].map(fm.p_value),
                      "p (Wilcoxon)": usable["p_wilcoxon"].map(fm.p_value),
                      "P(improvement)": usable["prob_improvement"].map(lambda x: fm.num(x, ".2f"))})
    folds = usable["p_folds"].notna().any()
    if folds:
        t.insert(t.columns.get_loc("p (Wilcoxon)") + 1, "p (folds)", usable["p_folds"].map(fm.p_value))
    return [head, "", fm.markdown(t), "",
            "Δ = method − " + str(versus) + f". Two-sided paired permutation test ({permutation_note(df)}) and "
            f"Wilcoxon signed-rank test; P(improvement) = P(method run > {versus} run) (Mann-Whitney U / n·m)." +
            (f" {CORRECTED_NOTE}." if folds else "")]


def tuned_table(summary: pd.DataFrame, df: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per tuned cell, the learning rate and weight decay ``bench tune`` chose, and its validation objective;
    with the runs ``df``, that objective re-measured at the reported seeds (:mod:`peft3d.reporting.objective`)."""
    t = summary[summary["tuned"].fillna(False).astype(bool)]
    out = pd.DataFrame({"backbone": t["backbone"], "weights": t["weights"], "dataset": t["dataset"],
                         "method": t["method"],
                         "lr": [fm.sci(lr) + (fm.EDGE_MARK if e else "")
                                for lr, e in zip(t["lr"], t["lr_edge"], strict=True)],
                         "lr range": t["lr_range"].fillna(fm.MISSING),
                         "weight decay": t["weight_decay"].map(fm.sci),
                         "val objective": (t["tune_objective"] * 100).map(fm.num)})
    again = remeasured(df) if df is not None else pd.DataFrame()
    if again.empty:
        return out
    by_study = again.set_index("tune_study")
    hit = [by_study.loc[s] if s in by_study.index else None for s in t["tune_study"]]
    out["re-measured (reported seeds)"] = [
        fm.MISSING if h is None else f"{h['remeasured_mean']:.1f} ± {h['remeasured_sd']:.1f} (n = {int(h['n_seeds'])})"
        if h["n_seeds"] > 1 else f"{h['remeasured_mean']:.1f} (n = 1)" for h in hit]
    out["optimism"] = [fm.MISSING if h is None else fm.signed(o * 100 - h["remeasured_mean"])
                       for h, o in zip(hit, t["tune_objective"], strict=True)]
    return out


TUNED_NOTE = ("lr / weight decay: the best trial of the cell's study (validation objective, in %), which every "
              "reported run of the cell trained with; lr range: the log-uniform range that study searched (a grid "
              "may centre one method's range elsewhere, never narrower or wider). `bench report --tuned` plots the "
              f"objective against lr per arm. {fm.EDGE_NOTE}")


REMEASURED_NOTE = ("Re-measured: the study's objective (mean validation accuracy over the variants its trials ran "
                   "at) computed for the chosen configuration at each reported seed, mean ± SD over those seeds: "
                   "what the configuration scores without being picked, and the noise of one trial's objective "
                   "(trials closer than about this SD were not told apart). Optimism = val objective − re-measured "
                   "mean: the winner's curse of picking the best of the study's trials.")


def tuned_markdown(df: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    t = tuned_table(summary, df)
    if t.empty:
        return []
    return ["## Tuned configuration per cell", "", fm.markdown(t), "", TUNED_NOTE,
            *([REMEASURED_NOTE] if "optimism" in t else []), "",
            *([TUNED_ON_FOLDS, ""] if tuned_on_folds(df) else [])]


def friedman_markdown(summary: pd.DataFrame) -> list[str]:
    return ["### Friedman test across cells", "", fm.friedman_sentence(friedman_of(summary))]


def method_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows backbone×weights×dataset, one column per method (test accuracy %), plus params rows' table."""
    s = summary.assign(cell=summary.apply(fm.cell, axis=1))
    wide = s.pivot_table(index=["backbone", "weights", "dataset"], columns="method", values="cell",
                         aggfunc="first", sort=False)
    methods = list(dict.fromkeys(summary["method"]))
    out = wide.reindex(columns=methods).fillna(fm.MISSING).reset_index()  # a method the row never ran: a dash
    controls = summary.drop_duplicates(["backbone", "weights"]).set_index(["backbone", "weights"])["control"]
    if controls.astype(bool).any():  # label the controls (protocol.md: a modality claim must beat them)
        out.insert(2, "control", [controls.get((b, w), "") for b, w in zip(out["backbone"], out["weights"],
                                                                            strict=True)])
    return out


def params_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per backbone: its block parameters, what every method trains beside the method (tokenizer, positional
    encoding, norms; the head), then each method's own trainable parameters as a count and as a share of the
    backbone's (``linear`` trains none; ``full`` all of the blocks)."""
    methods = list(dict.fromkeys(summary["method"]))
    rows = []
    for bb, g in summary.groupby("backbone", sort=False):
        backbone = _one(g["params_backbone"])
        row = {"backbone": bb, "backbone params": fm.params(backbone),
               "shared (tokenizer, norms)": _span(g["params_shared"]), "head": _span(g["params_head"])}
        for m in methods:
            own = g.loc[g["method"] == m, "params_method"].max() if (g["method"] == m).any() else math.nan
            row[m] = fm.MISSING if fm.is_missing(own) else fm.params(own) + (
                "" if fm.is_missing(backbone) or not backbone else f" ({fm.share(own, backbone)})")
        rows.append(row)
    return pd.DataFrame(rows)


def _one(values: pd.Series) -> float:
    v = values.dropna()
    return float(v.max()) if len(v) else math.nan


def _span(values: pd.Series) -> str:
    """A count, or its range when the cells differ (e.g. the head of datasets with more classes)."""
    v = values.dropna()
    if v.empty:
        return fm.MISSING
    lo, hi = v.min(), v.max()
    return fm.params(lo) if lo == hi else f"{fm.params(lo)}–{fm.params(hi)}"


# val is what selected the epoch (the maximum over a run's epochs on a small split), so it reads high; the
# note says so wherever the column appears, so that nobody ranks cells by it
VAL_TRAIN_NOTE = ("val / train: accuracy at the selected epoch; val chose that epoch (its maximum over the run's "
                  "epochs), so it reads above test: compare cells by test.")
PARAMS_NOTE = ("Each method's own trainable parameters (the PEFT module; `full`: every backbone block; `linear`: "
               "none), in brackets as a share of the backbone's block parameters (counted before the method adds "
               "to them). Every method also trains the shared tokenizer, positional encoding and norms and the "
               "head, listed once per backbone: they are not the method's cost. Trainable excluding the head = "
               "method + shared (the Any2Point paper's convention); — : a count the result does not record.")


def noise_floor(summary: pd.DataFrame) -> str:
    """The binomial SE of each dataset's test set (a k-fold dataset's pooled test set) at its cells' mean."""
    ok = summary[summary["n"] > 0]
    if ok.empty:
        return ""
    parts = []
    for ds, g in ok.groupby("dataset", sort=False):
        p, n = g["mean"].mean() / 100, int(g["n_test"].max())
        se = 100 * stats.binomial_se(p, n)
        parts.append(f"{ds} ≈ {se:.1f} pt at {100 * p:.0f}% with n_test = {n} (2 SE = {2 * se:.1f} pt)")
    return ("Test-set sampling noise (binomial SE at the mean accuracy): " + "; ".join(parts) +
            "; differences smaller than ~2 SE are not evidence.")


def render_markdown(grid: str, df: pd.DataFrame, versus: str | None = None) -> str:
    summary = summarize(df)
    n_ok, n_all = int((df["status"] == "success").sum()), len(df)
    parts = [f"# {grid}: test accuracy (%)", "",
             "Overall accuracy on the test set at the epoch with the best validation accuracy; mean ± std "
             f"over {replicates(df)} (n = successful/expected runs).", "",
             *([*transfer_markdown(df), *modality_markdown(df)] if has_controls(df) else []),
             method_table(summary).to_markdown(index=False), "", noise_floor(summary), "",
             *([folds_note(df), ""] if is_pooled(df) else []),
             "## Trainable parameters: each method's own, apart from the shared tokenizer and head", "",
             fm.markdown(params_table(summary)), "", PARAMS_NOTE, "",
             *cost_markdown(df), *tuned_markdown(df, summary)]
    if (summary["n"] > 0).any():
        parts += ["## Statistics", "", fm.markdown(stats_table(summary)), "",
                  f"95% CI: percentile bootstrap of the mean over {replicates(df)} (scipy.stats.bootstrap). binom. "
                  "SE: the test set's own sampling noise, sqrt(p(1−p)/n_test). † best-on-test is optimistic (epoch "
                  "selected on test, as papers do) and never the headline. " + VAL_TRAIN_NOTE
                  + " ‡ late sel.: runs whose selected epoch lies in the last 10% of their epochs "
                  "(possibly under-trained; the cell is marked ‡ in the table above).", "",
                  *paired_markdown(df, versus), "", *friedman_markdown(summary), ""]
    parts.append(f"{n_ok}/{n_all} runs succeeded.")
    failed = df[df["status"] != "success"]
    if len(failed):
        parts += ["", "## Not in the table", ""]
        parts += [f"- `{r.run_id}` {r.backbone}[{r.weights}]/{r.method}/{r.run_dataset}/s{r.seed}: {r.status} — "
                  f"{fm.short(r.error, 200)}" for r in failed.itertuples()]
    return "\n".join(parts) + "\n"

