"""Modality against modality: the paper's ordering claim (language > 2D vision > audio) as paired tests.

The transfer section ranks the pretrained backbones of a dataset × method by their means; a ranking is not a
test. Here every two pretrained backbones of one dataset × method are compared on the replicates both ran (seed;
(fold, seed) on a k-fold dataset: the same test models and seeds), two ways:

- accuracy, A − B: what a user choosing a backbone gets. It mixes the pretraining with the architecture
  (depth, width, token count), so it does not say whose *pretraining* transfers.
- transfer gain, (A − A's random-init twin) − (B − B's random-init twin), over the replicates all four ran:
  each architecture's own random initialisation cancels it, and what is left is how much more one modality's
  pretraining helps than the other's. This is the comparison "which modality transfers best" asks for; it
  exists only where both backbones' own random twins ran under the same method.
"""
from __future__ import annotations

from itertools import combinations

import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.reporting.transfer import by_replicate, paired, paired_text, pairing_note

TITLE = "Modality against modality"


Series = tuple[pd.Series, "pd.Series | None"]  # a backbone's accuracy and gain per replicate


def _arm_series(ok: pd.DataFrame, cell: pd.DataFrame, ds: str, method: str) -> dict[str, Series]:
    """Per pretrained backbone of the cell: its accuracy per replicate and its gain over its own random-init twin
    under the same method (None when the grid ran no such twin; NaN where the twin lacks a replicate)."""
    twins = ok[(ok["dataset"] == ds) & (ok["method"] == method) & (ok["control"] == "random init")]
    out = {}
    for bb, g in cell.groupby("backbone", sort=False):
        acc, twin = by_replicate(g), twins[twins["backbone"] == bb]
        out[bb] = (acc, acc - by_replicate(twin) if len(twin) else None)
    return out


def modality_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per two pretrained backbones of a dataset × method, the higher mean first (``a``): the paired
    accuracy difference and, where both own random twins ran, the paired difference of transfer gains, each
    with its permutation p, pair count and (k-fold datasets) corrected fold p."""
    ok = df[df["status"] == "success"]
    rows = []
    for (ds, method), cell in ok[ok["control"] == ""].groupby(["dataset", "method"], sort=False):
        series = _arm_series(ok, cell, ds, method)
        modality = cell.groupby("backbone")["modality"].first()
        ranked = sorted(series, key=lambda bb: -series[bb][0].mean())
        for a, b in combinations(ranked, 2):
            (acc_a, gain_a), (acc_b, gain_b) = series[a], series[b]
            r = {"dataset": ds, "method": method, "a": a, "b": b, "a_modality": modality[a],
                 "b_modality": modality[b], **{f"acc:{k}": v for k, v in paired(acc_a, acc_b, cell).items()}}
            if gain_a is not None and gain_b is not None:
                r.update({f"gain:{k}": v for k, v in paired(gain_a.dropna(), gain_b.dropna(), cell).items()})
            rows.append(r)
    return pd.DataFrame(rows)


def _label(modality: str, backbone: str) -> str:
    return f"{modality} ({backbone})"


def modality_table(df: pd.DataFrame) -> pd.DataFrame:
    """Display strings of :func:`modality_frame` (empty when no dataset × method ran two pretrained backbones)."""
    mf = modality_frame(df)
    if mf.empty:
        return mf

    def cell(r: pd.Series, kind: str) -> str:
        if fm.is_missing(r.get(f"{kind}:delta")):
            return f"{fm.MISSING} (a random-init twin not run)"
        return paired_text(r[f"{kind}:delta"], r[f"{kind}:p"], r[f"{kind}:pairs"], r.get(f"{kind}:p_folds"))

    return pd.DataFrame({
        "dataset": mf["dataset"], "method": mf["method"],
        "comparison": [f"{_label(r['a_modality'], r['a'])} − {_label(r['b_modality'], r['b'])}"
                       for _, r in mf.iterrows()],
        "Δ accuracy": [cell(r, "acc") for _, r in mf.iterrows()],
        "Δ transfer gain (each vs its own random init)": [cell(r, "gain") for _, r in mf.iterrows()]})


def note(df: pd.DataFrame) -> str:
    return ("Every two pretrained backbones of a dataset × method, the higher mean first; Δ "
            f"{pairing_note(df)}. Δ accuracy = A − B in points: what choosing A over B gives, architecture included. "
            "Δ transfer gain = (A − A's random init) − (B − B's random init), over the replicates all four ran: each "
            "architecture's own random initialisation cancels it, so this is the test of whose pretraining "
            "transfers more. Each p is one comparison's: with m comparisons in a dataset × method (three for three "
            "modalities), an ordering is established only where p is below 0.05 / m (Bonferroni) under both tests.")


def modality_markdown(df: pd.DataFrame) -> list[str]:
    shown = modality_table(df)
    return [] if shown.empty else [f"## {TITLE}", "", fm.markdown(shown), "", note(df), ""]
