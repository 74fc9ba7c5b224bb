"""Learning-rate sensitivity of a tuned grid, from the manifest ``bench tune`` writes (``results/tune/<grid>.json``):
every trial of every arm's study, its learning rate and weight decay, and its validation objective (a pruned
trial's last running mean). A reader sees whether an arm's lead holds across the learning rates tried or exists
only at the chosen one — the question a per-arm tuning answers (the untuned comparison it replaces could flip a
pretrained − random gap by changing the lr alone).

The manifest is passed in as a mapping (the ``cli`` reads it), so the reporting layer never imports the tuning
layer above it.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from peft3d.reporting.figures import arm_panels, line_style, log_axis

TRIAL_COLUMNS = ["study", "method", "dataset", "backbone", "weights", "arm", "number", "state", "lr",
                 "weight_decay", "value", "last_value", "best"]


def cell_dataset(cell: dict[str, Any]) -> str:
    """A study's dataset as the tables name it: the k-fold cell (``sweethome3d/cv5``) when its objective variants
    are folds of a declared partition, else ``family/variant(s)``."""
    from peft3d.datasets import fold_group_of

    family, variants = cell["dataset"], list(cell.get("variants") or [])
    group = fold_group_of(family, variants[0]) if variants else None
    if group is not None and all(v in group.folds for v in variants):
        return group.dataset
    return f"{family}/{'+'.join(variants)}"


def _pct(x: Any) -> float:
    return 100 * float(x) if x is not None else math.nan


def _study_full(study: dict[str, Any]) -> bool:
    """Whether a study has spent its trial budget: before that its best trial is the best so far, not the
    configuration the arm runs with (a manifest without the counts is taken as full)."""
    budget = study.get("n_trials")
    return budget is None or study.get("counted", 0) >= budget


def trials_frame(manifest: dict[str, Any]) -> pd.DataFrame:
    """One row per trial of every study with a cell record: params, state, objective (%; a pruned trial's last
    running mean in ``last_value``) and whether it is the configuration the arm was run with (the best trial of a
    study that has spent its budget; none while a study is still short of trials)."""
    rows = []
    for name, study in manifest.get("studies", {}).items():
        cell = study.get("cell")
        if not cell:
            continue
        arm = f"{cell['backbone']} [{cell['weights']}]"
        chosen = study.get("best_trial") if _study_full(study) else None
        for t in study.get("trials") or []:
            p = t.get("params") or {}
            rows.append({"study": name, "method": cell["method"], "dataset": cell_dataset(cell),
                         "backbone": cell["backbone"], "weights": cell["weights"], "arm": arm,
                         "number": t["number"], "state": t["state"], "lr": p.get("lr", math.nan),
                         "weight_decay": p.get("weight_decay", math.nan), "value": _pct(t.get("value")),
                         "last_value": _pct(t.get("last_value")), "best": chosen is not None and t["number"] == chosen})
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def sensitivity_figure(trials: pd.DataFrame) -> Any | None:
    """Validation objective vs lr (log), one line per arm through its complete trials (pretrained solid, random
    init dashed), pruned trials hollow at their last running mean, the chosen trial ringed; one panel per
    method × dataset."""
    from matplotlib.lines import Line2D

    done = trials[trials["state"].isin(["COMPLETE", "PRUNED"])]
    if done.empty:
        return None

    def draw(ax: Any, here: pd.DataFrame, color: dict[str, Any]) -> None:
        for (bb, w), g in here.groupby(["backbone", "weights"], sort=False):
            full = g[g["state"] == "COMPLETE"].sort_values("lr")
            ax.plot(full["lr"], full["value"], line_style(w), marker="o", ms=5, color=color[bb], lw=1.3)
            pruned = g[g["state"] == "PRUNED"]
            ax.plot(pruned["lr"], pruned["last_value"], "o", ms=6, mfc="none", color=color[bb])
            best = full[full["best"]]
            ax.plot(best["lr"], best["value"], "o", ms=12, mfc="none", mec="k", mew=1.2)
        log_axis(ax, "x", list(here["lr"]), lambda x: f"{x:g}")
        ax.set_xlabel("learning rate (log)")
        ax.set_ylabel("validation objective (%)")

    return arm_panels(done, ("method", "dataset"), 5.4, draw, (
        Line2D([], [], color="gray", marker="o", mfc="none", ls="", label="pruned (last running mean)"),
        Line2D([], [], color="k", marker="o", mfc="none", ms=10, ls="", label="chosen configuration")))


def _point(trials: pd.DataFrame) -> pd.Series:
    """A trial's sampled point, as a key that matches across arms (the same Sobol point in every study)."""
    return trials["lr"].map(lambda x: f"{x:.6g}") + "/" + trials["weight_decay"].map(lambda x: f"{x:.6g}")


def flips_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Per method × dataset × backbone with both a pretrained and a random-init arm: at the (lr, weight decay)
    points both studies completed, how often pretrained leads and by how much (validation points), beside the
    gap between the two arms' chosen configurations."""
    done = trials[trials["state"] == "COMPLETE"].assign(point=lambda t: _point(t))
    rows = []
    for (method, ds, bb), g in done.groupby(["method", "dataset", "backbone"], sort=False):
        pre, rnd = g[g["weights"] == "pretrained"], g[g["weights"] == "random"]
        if pre.empty or rnd.empty:
            continue
        both = pre.set_index("point")["value"].to_frame("pre").join(rnd.set_index("point")["value"].rename("rnd"),
                                                                    how="inner")
        delta = both["pre"] - both["rnd"]
        best = pre.loc[pre["best"], "value"].max() - rnd.loc[rnd["best"], "value"].max()
        rows.append({"method": method, "dataset": ds, "backbone": bb, "points": len(delta),
                     "pretrained_ahead": int((delta > 0).sum()), "delta_min": delta.min() if len(delta) else math.nan,
                     "delta_max": delta.max() if len(delta) else math.nan, "delta_chosen": best})
    return pd.DataFrame(rows, columns=["method", "dataset", "backbone", "points", "pretrained_ahead", "delta_min",
                                       "delta_max", "delta_chosen"])


NOTE = ("Each study's trials at their learning rate (x) and validation objective (y, %: the mean validation "
        "accuracy over the objective's folds or runs). Every trial also has its own weight decay: with the grid's "
        "shared Sobol sampler the studies try the same (lr, weight decay) points, so arms are compared at "
        "identical points. Solid: pretrained; dashed: random init. Hollow: a trial pruned after part of its "
        "objective (plotted at its running mean, not comparable to a full objective). Ringed: the chosen "
        "configuration, which the reported runs used; a study still short of its trials has no ring yet. The "
        "table counts, per backbone, at how many shared points the pretrained arm led its random-init control on "
        "validation: a lead at the chosen configurations but not across the points depends on the learning rate.")
