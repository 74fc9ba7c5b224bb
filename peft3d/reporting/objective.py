"""How much of a tuned cell's validation objective was the luck of one trial: the objective re-measured.

A study picks the best of N trials by one noisy number: the mean validation accuracy over its objective variants
(e.g. folds f0-f2) at the tuning seed. The final runs train the chosen configuration on the same variants at the
reported seeds, so the same number can be computed once per reported seed. Their mean is what the configuration
scores without the selection; their spread is the noise a single trial's objective carries (how far apart two
trials must be before the choice between them means anything); the chosen trial's value minus that mean is the
selection optimism (the winner's curse of picking the maximum of N noisy values).
"""
from __future__ import annotations

import pandas as pd

from peft3d.analysis import stats
from peft3d.core.studies import objective_variants_of

COLUMNS = ["tune_study", "n_seeds", "remeasured_mean", "remeasured_sd"]


def remeasured(df: pd.DataFrame) -> pd.DataFrame:
    """Per study of the tuned runs in ``df`` (runs_frame): over the reported seeds that ran every objective
    variant, the mean and SD (points) of the per-seed objective (mean validation accuracy over the variants)."""
    if "tune_study" not in df:
        return pd.DataFrame(columns=COLUMNS)
    ok = df[(df["status"] == "success") & df["tune_study"].notna()]
    rows = []
    for study, g in ok.groupby("tune_study", sort=False):
        variants = objective_variants_of(str(study))
        here = g[g["run_dataset"].str.rsplit("/", n=1).str[-1].isin(variants)]
        per_seed = here.groupby("seed")["val_acc"].agg(["mean", "count"])
        values = (per_seed.loc[per_seed["count"] == len(variants), "mean"] * 100).tolist()
        if values:
            mean, sd = stats.mean_std(values)
            rows.append({"tune_study": study, "n_seeds": len(values), "remeasured_mean": mean, "remeasured_sd": sd})
    return pd.DataFrame(rows, columns=COLUMNS)
