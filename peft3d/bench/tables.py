"""Tables built only from result JSONs. A failed or missing cell is an explicit blank with its reason,
never a number. Accuracies are overall accuracy on the official test set at the best-validation epoch."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from peft3d.bench.results import atomic_write_text, load_results
from peft3d.spec import RunSpec

RUN_COLUMNS = ["run_id", "backbone", "weights", "method", "preset", "dataset", "seed", "status", "error",
               "test_acc", "val_acc", "test_acc_best_test", "test_acc_last", "selected_epoch", "n_test",
               "params_method", "params_trainable_excl_head", "params_trainable", "params_total", "time_s",
               "step_ms", "pretrain_modality"]


def runs_frame(specs: list[RunSpec], root: Path) -> pd.DataFrame:
    """One row per expected run; ``status`` is success | failed | missing."""
    results = load_results(root, [s.run_id for s in specs])
    rows = []
    for s in specs:
        r = results[s.run_id] or {}
        m, p = r.get("metrics") or {}, r.get("params") or {}
        rows.append({
            "run_id": s.run_id, "backbone": s.backbone, "weights": s.weights, "method": s.method,
            "preset": s.preset, "dataset": f"{s.dataset}/{s.variant}", "seed": s.seed,
            "status": r.get("status", "missing"), "error": r.get("error") or ("not run yet" if not r else None),
            "test_acc": m.get("test_acc"), "val_acc": m.get("val_acc"),
            "test_acc_best_test": m.get("test_acc_best_test"), "test_acc_last": m.get("test_acc_last"),
            "selected_epoch": m.get("selected_epoch"), "n_test": m.get("n_test"),
            "params_method": p.get("method"), "params_trainable_excl_head": p.get("trainable_excluding_head"),
            "params_trainable": p.get("trainable"), "params_total": p.get("total"),
            "time_s": (r.get("time") or {}).get("total_s"), "step_ms": (r.get("time") or {}).get("step_ms"),
            "pretrain_modality": (r.get("backbone") or {}).get("pretrain_modality"),
        })
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    ok = df["status"] == "success"
    for c in ("test_acc", "val_acc", "test_acc_best_test", "test_acc_last"):
        df[c] = pd.to_numeric(df[c].where(ok), errors="coerce")  # failed runs never carry numbers
    return df


CELL_KEYS = ["backbone", "weights", "dataset", "method"]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per (backbone, weights, dataset, method), in accuracy points (%)."""
    rows = []
    for key, g in df.groupby(CELL_KEYS, sort=False, dropna=False):
        ok = g[g["status"] == "success"]
        acc = ok["test_acc"].astype(float) * 100
        reason = None
        if ok.empty:
            bad = g[g["status"] != "success"]
            reason = str(bad["error"].dropna().iloc[0]) if bad["error"].notna().any() else "missing"
        rows.append(dict(zip(CELL_KEYS, key), n=len(ok), n_expected=len(g),
                         mean=acc.mean() if len(ok) else math.nan,
                         std=acc.std(ddof=1) if len(ok) > 1 else math.nan,
                         best_test_mean=(ok["test_acc_best_test"].astype(float) * 100).mean() if len(ok) else math.nan,
                         last_mean=(ok["test_acc_last"].astype(float) * 100).mean() if len(ok) else math.nan,
                         n_test=ok["n_test"].max() if len(ok) else math.nan,
                         params=ok["params_trainable_excl_head"].max() if len(ok) else math.nan,
                         params_method=ok["params_method"].max() if len(ok) else math.nan,
                         reason=reason))
    return pd.DataFrame(rows)


def fmt_cell(row: pd.Series) -> str:
    if row["n"] == 0:
        return f"— ({_short(row['reason'])})"
    s = f"{row['mean']:.1f}"
    s += f" ± {row['std']:.1f}" if row["n"] > 1 else ""
    if row["n"] < row["n_expected"] or row["n"] == 1:
        s += f" (n={row['n']}/{row['n_expected']})"
    return s


def _short(reason: Any, n: int = 60) -> str:
    r = " ".join(str(reason).split())
    return r if len(r) <= n else r[: n - 1] + "…"


def fmt_params(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x / 1e6:.2f}M" if x >= 1e5 else f"{x / 1e3:.1f}k"


def method_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows backbone×weights×dataset, one column per method (test accuracy %), plus params rows' table."""
    s = summary.assign(cell=summary.apply(fmt_cell, axis=1))
    wide = s.pivot_table(index=["backbone", "weights", "dataset"], columns="method", values="cell",
                         aggfunc="first", sort=False)
    methods = list(dict.fromkeys(summary["method"]))
    return wide.reindex(columns=methods).reset_index()


def params_table(summary: pd.DataFrame) -> pd.DataFrame:
    s = summary.assign(p=summary["params"].map(fmt_params))
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


def render_markdown(grid: str, df: pd.DataFrame) -> str:
    summary = summarize(df)
    n_ok, n_all = int((df["status"] == "success").sum()), len(df)
    parts = [f"# {grid}: test accuracy (%)", "",
             "Overall accuracy on the test set at the epoch with the best validation accuracy; mean ± std "
             "over seeds (n = successful/expected runs).", "",
             method_table(summary).to_markdown(index=False), "", noise_floor(summary), "",
             "## Trainable parameters (excluding the head)", "", params_table(summary).to_markdown(index=False), "",
             f"{n_ok}/{n_all} runs succeeded."]
    failed = df[df["status"] != "success"]
    if len(failed):
        parts += ["", "## Not in the table", ""]
        parts += [f"- `{r.run_id}` {r.backbone}[{r.weights}]/{r.method}/{r.dataset}/s{r.seed}: {r.status} — "
                  f"{_short(r.error, 200)}" for r in failed.itertuples()]
    return "\n".join(parts) + "\n"


def write_tables(grid: str, df: pd.DataFrame, root: Path) -> tuple[Path, Path, str]:
    md = render_markdown(grid, df)
    tdir = root / "tables"
    md_path, csv_path = tdir / f"{grid}.md", tdir / f"{grid}.csv"
    atomic_write_text(md_path, md)
    atomic_write_text(csv_path, df.to_csv(index=False))
    return md_path, csv_path, md
