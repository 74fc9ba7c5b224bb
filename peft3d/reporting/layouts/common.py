"""What every paper layout shares: the :class:`Layout` it returns, dataset and method selection, the
placement of the paper's rows beside ours, and the notes that recur."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.analysis import reference as ref
from peft3d.analysis import stats

MODALITY_ORDER = ["language", "vision", "audio"]
PAPER_DATASETS = ["scanobjectnn/pb_t50_rs", "modelnet40"]
REASON_CHARS = 41  # a blank cell's reason in the paper layouts: 40 characters and an ellipsis
OURS = "ours"
PAPER_MARK = "n/a‡"


@dataclass
class Layout:
    name: str
    title: str
    display: pd.DataFrame
    numeric: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def same_dataset(ours: str, wanted: str) -> bool:
    """'modelnet40' matches 'modelnet40/auto'; 'scanobjectnn/pb_t50_rs' matches itself."""
    return ours == wanted or ours.split("/")[0] == wanted


def datasets_of(df: pd.DataFrame, dataset: str | None) -> list[str]:
    ds = list(dict.fromkeys(df["dataset"]))
    if dataset:
        ds = [d for d in ds if same_dataset(d, dataset)]
        if not ds:
            from peft3d.core.errors import ConfigError

            have = ", ".join(dict.fromkeys(df["dataset"]))
            raise ConfigError(f"dataset {dataset!r} is not in this grid (it has {have})")
    return ds


def paper_columns(datasets: list[str]) -> list[str]:
    """Paper datasets the grid lacks: shown as extra columns so the paper's figures have somewhere to go."""
    have = {ref.dataset_key(d) for d in datasets}
    return [d for d in PAPER_DATASETS if ref.dataset_key(d) not in have]


def pick_methods(methods: list[str], method: str | None, versus: str | None = None) -> list[str]:
    """The methods a main / modality table shows: ``method``, else the compared-to one when it ran, else all."""
    if method:
        if method not in methods:
            from peft3d.core.errors import ConfigError

            raise ConfigError(f"method {method!r} has no runs in this grid (it has {', '.join(methods)})")
        return [method]
    return [versus] if versus in methods else methods


def modality_rank(m: str) -> int:
    return MODALITY_ORDER.index(m) if m in MODALITY_ORDER else len(MODALITY_ORDER)


def interleave(ours: list[dict], paper: list[dict], key: Callable[[dict], Any]) -> list[dict]:
    """Each paper row right after the last row with the same key ("beside ours"); the others at the end."""
    out, rest = list(ours), []
    for p in paper:
        idx = [i for i, r in enumerate(out) if key(p) is not None and key(r) == key(p)]
        if idx:
            out.insert(idx[-1] + 1, p)
        else:
            rest.append(p)
    return out + rest


def selection_note() -> str:
    return ("‡ " + ref.SELECTION_NOTE + "; * = with test-time voting. Paper rows: " + ref.MAIN_SOURCE + "; "
            + ref.RECHECK_SOURCE + ".")


def binomial_note(summary: pd.DataFrame) -> str:
    parts = []
    for ds, g in summary[summary["n"] > 0].groupby("dataset", sort=False):
        p, n = g["mean"].mean() / 100, int(g["n_test"].max())
        parts.append(f"{ds} ±{100 * stats.binomial_se(p, n):.1f} pt (n_test = {n})")
    return ("Test-set binomial SE at the mean accuracy: " + "; ".join(parts) + ".") if parts else ""


def method_params(cells: pd.DataFrame) -> tuple[str, str]:
    """The method's own trainable parameters over ``cells`` (summary rows: one method, one or more backbones) and
    their share of the backbone's block parameters, as display strings: one value, or the range when the
    backbones differ; a dash when the results do not record it."""
    ok = cells[cells["n"] > 0]
    counts = ok["params_method"].dropna().astype(float)
    backbone = ok["params_backbone"].astype(float).where(ok["params_backbone"].astype(float) > 0)
    shares = (ok["params_method"].astype(float) / backbone).dropna()

    def span(v: pd.Series, show: Callable[[float], str]) -> str:
        return fm.MISSING if v.empty else show(v.min()) if v.min() == v.max() else f"{show(v.min())}–{show(v.max())}"

    return span(counts, fm.params), span(shares, lambda x: fm.share(x, 1))
