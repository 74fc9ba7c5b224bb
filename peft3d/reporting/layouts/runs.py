"""``runs``: one row per run, flat."""
from __future__ import annotations

import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.reporting.layouts.common import (
    Layout,
    datasets_of,
)

RUNS_NUMERIC = ["run_id", "backbone", "modality", "weights", "method", "preset", "dataset", "seed", "status",
                "test_acc", "val_acc", "test_acc_best_test", "test_acc_last", "selected_epoch", "n_test",
                "params_method", "params_trainable_excl_head", "params_trainable", "time_s", "error"]


def runs_layout(df: pd.DataFrame, dataset: str | None = None) -> Layout:
    d = df[df["dataset"].isin(datasets_of(df, dataset))].copy()
    if "run_dataset" in d:  # each run's own dataset: the fold of a k-fold cell, not the pooled cell
        d["dataset"] = d["run_dataset"]
    pct = lambda c: [fm.num(x * 100) if not fm.is_missing(x) else "—" for x in d[c]]  # noqa: E731
    display = pd.DataFrame({
        "run_id": d["run_id"], "backbone": d["backbone"], "modality": d["modality"], "weights": d["weights"],
        "method": d["method"], "dataset": d["dataset"], "seed": d["seed"].astype(str), "status": d["status"],
        "test": pct("test_acc"), "val": pct("val_acc"), "best-on-test†": pct("test_acc_best_test"),
        "last": pct("test_acc_last"),
        "epoch": [str(int(x)) + (" ‡" if late is True else "") if not fm.is_missing(x) else "—"
                  for x, late in zip(d["selected_epoch"], d.get("late_selection", [None] * len(d)), strict=True)],
        "train": pct("train_acc") if "train_acc" in d else ["—"] * len(d),
        "params excl. head": [fm.params(x) for x in d["params_trainable_excl_head"]],
        "time (s)": [fm.num(x, ".0f") for x in d["time_s"]],
        "error": [(" ".join(str(e).split())[:60] if isinstance(e, str) else "") for e in d["error"]]})
    return Layout("runs", "All runs", display, d[RUNS_NUMERIC].copy(),
                  ["Accuracies in %; test = at the best-validation epoch. † optimistic (epoch selected on test). "
                   "‡ the selected epoch lies in the last 10% of the run's epochs (possibly under-trained)."])
