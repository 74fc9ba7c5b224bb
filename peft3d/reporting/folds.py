"""k-fold cross-validation in tables: the folds of one partition are replicates of ONE dataset cell.

A dataset declares which of its variants are the folds of one partition (``fold_groups`` in
:mod:`peft3d.datasets`); a grid that runs them gets one cell per backbone × weights × method on
``family/<group>`` (e.g. ``sweethome3d/cv5``), whose replicate unit is (fold, seed): mean ± std and the CI are
over the (fold, seed) accuracies, paired comparisons pair over (fold, seed), and the noise floor is the
binomial SE of the pooled test set (every fold's test models, each tested once over the folds). Nothing here
guesses from a variant's name: a dataset without ``fold_groups`` keeps one cell per variant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from peft3d.analysis import stats

REPLICATE = ("fold", "seed")


@dataclass(frozen=True)
class Pooling:
    """Where one run's dataset goes in the tables."""

    dataset: str  # the cell's dataset: ``family/<group>`` for a fold, else ``family/variant``
    fold: str = ""  # the variant when it is a fold of a declared partition, else ""
    per_class: int | None = None  # the group's labelled training models per class (None: all)
    full: str | None = None  # the cell's dataset of the partition this group subsamples (few-label groups)
    n_folds: int = 0  # k of the partition the fold belongs to (0 for a plain dataset)


def pooling(specs: Iterable[Any]) -> dict[tuple[str, str], Pooling]:
    """(family, variant) -> its :class:`Pooling`, for every dataset of ``specs``. A grid that runs only some
    folds of a partition names them (``sweethome3d/cv5[f0+f1]``): it is not the whole partition."""
    from peft3d.datasets import fold_group_of

    pairs = list(dict.fromkeys((s.dataset, s.variant) for s in specs))
    groups = {p: fold_group_of(*p) for p in pairs}
    present: dict[tuple[str, str], set[str]] = {}
    for (family, variant), g in groups.items():
        if g is not None:
            present.setdefault((family, g.name), set()).add(variant)
    labels = {}
    for (family, name), have in present.items():
        folds = next(g.folds for g in groups.values() if g is not None and (g.family, g.name) == (family, name))
        shown = [f for f in folds if f in have]
        labels[(family, name)] = f"{family}/{name}" + ("" if len(shown) == len(folds) else f"[{'+'.join(shown)}]")
    out = {}
    for (family, variant), g in groups.items():
        if g is None:
            out[(family, variant)] = Pooling(f"{family}/{variant}")
        else:
            full = labels.get((family, g.subsample_of)) or (f"{family}/{g.subsample_of}" if g.subsample_of else None)
            out[(family, variant)] = Pooling(labels[(family, g.name)], variant, g.per_class, full, len(g.folds))
    return out


def replicate_keys(df: pd.DataFrame) -> list[str]:
    """The columns that name one replicate of a cell: (fold, seed), or seed for frames without folds."""
    return [k for k in REPLICATE if k in df.columns]


def is_pooled(df: pd.DataFrame) -> bool:
    return "fold" in df.columns and bool((df["fold"].fillna("") != "").any())


def unit(df: pd.DataFrame) -> str:
    """What a table's replicates are, as the notes say it."""
    return "(fold, seed)" if is_pooled(df) else "seed"


def replicates(df: pd.DataFrame) -> str:
    """The replicates of a cell, plural, as the notes say it."""
    return "(fold, seed) replicates" if is_pooled(df) else "seeds"


def permutation_note(df: pd.DataFrame) -> str:
    """How exact the paired permutation test is at this table's replicate count."""
    if is_pooled(df):
        return ("sign flips of the (fold, seed) differences; exact up to 13 pairs, else 9,999 seeded random flips; "
                "the folds of one seed share no test model, the seeds of one fold share all of them, so the pairs "
                "are not independent and p is optimistic for between-seed noise")
    return "sign flips, exact for few seeds: with 3 seeds p ≥ 0.25"


def test_train_ratio(runs: pd.DataFrame) -> float:
    """n_test / n_train of the k-fold partition ``runs`` belong to: 1/(k − 1) (a fold's test part against the
    training part it is tested after, validation included: it is carved from it). A few-label group takes its
    partition's ratio: its training subsets overlap no more than the partition's, so the correction stays on the
    conservative side. nan when the runs are not folds of a partition."""
    k = int(runs["n_folds"].max()) if "n_folds" in runs and len(runs) and runs["n_folds"].notna().any() else 0
    return 1 / (k - 1) if k > 1 else math.nan


def fold_differences(a: pd.Series, b: pd.Series) -> np.ndarray | None:
    """One ``a`` − ``b`` difference per fold, both indexed by (fold, seed): the seeds a fold shares are averaged
    first (they share its test models). None when the two have no (fold, seed) in common."""
    common = a.index.intersection(b.index)
    if not len(common) or not isinstance(common, pd.MultiIndex):
        return None
    return (a[common] - b[common]).groupby(level=0).mean().to_numpy()


def fold_corrected_p(a: pd.Series, b: pd.Series, ratio: float) -> float:
    """The corrected resampled t-test's p (:func:`peft3d.analysis.stats.corrected_fold_p`) of ``a`` − ``b``."""
    diffs = fold_differences(a, b)
    return math.nan if diffs is None else stats.corrected_fold_p(diffs, ratio)


def fold_lsd(a: pd.Series, b: pd.Series, ratio: float) -> float:
    """That test's least significant difference for ``a`` − ``b``
    (:func:`peft3d.analysis.stats.corrected_fold_lsd`)."""
    diffs = fold_differences(a, b)
    return math.nan if diffs is None else stats.corrected_fold_lsd(diffs, ratio)


CORRECTED_NOTE = ("p (folds): the corrected resampled t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004) on one "
                  "difference per fold (its seeds averaged), variance × (1/J + 1/(k − 1)) for J folds of a k-fold "
                  "partition, whose models share training data, J − 1 degrees of freedom: the conservative p, where "
                  "the (fold, seed) permutation p is the optimistic one; a difference is clear of the noise only "
                  "when both are small")


def pooled_n_test(ok: pd.DataFrame) -> float:
    """Test models behind a cell: a fold group's is the sum of its folds' test sets (each model tested once over
    the folds), a plain dataset's its one test set."""
    if ok.empty:
        return float("nan")
    if "fold" not in ok.columns:
        return float(ok["n_test"].max())
    return float(ok.groupby(ok["fold"].fillna(""))["n_test"].max().sum())


def folds_note(df: pd.DataFrame) -> str:
    """What (fold, seed) replicates mean for the statistics ('' when no dataset is fold-pooled)."""
    if not is_pooled(df):
        return ""
    pooled = df[df["fold"].fillna("") != ""]
    parts = [f"{ds} = folds {', '.join(dict.fromkeys(g['fold']))}" for ds, g in pooled.groupby("dataset", sort=False)]
    return ("k-fold cells (" + "; ".join(parts) + "): the folds of one partition are replicates of one dataset, "
            "so n, mean ± std, the 95% CI and the paired tests run over (fold, seed) replicates. The seeds of a "
            "fold share its test models, so the CI reflects training and fold variation, not the sampling of "
            "test models; that is the binomial SE of the pooled test set (n_test = every fold's test models, "
            "each model tested once over the folds). The run-level layout lists each fold.")


TUNED_ON_FOLDS = ("Tuned on folds: each arm's configuration was chosen on the validation splits of some of its "
                  "folds (the tuning seed, not a reported one); those splits are carved from training parts that "
                  "hold other folds' test models, so the chosen configuration has seen labels that are test labels "
                  "of another fold (never of the fold a run is scored on). The same holds for every arm.")


def tuned_on_folds(df: pd.DataFrame) -> bool:
    """True when some tuned run belongs to a k-fold cell (its configuration was chosen on pooled folds)."""
    if not is_pooled(df) or "tuned" not in df.columns:
        return False
    return bool((df["tuned"].fillna(False).astype(bool) & (df["fold"].fillna("") != "")).any())
