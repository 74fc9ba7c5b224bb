"""The Any2Point paper's published numbers (arXiv 2404.07989), as data with provenance, for ``--reference paper``.

The figures live in ``paper_reference.yaml`` beside this file, with their sources: the Any2Point
repository's "Main Results" table (the same figures as its released logs) and a published summary of the
paper. The paper selects the checkpoint on the test set (docs/any2point.md), so these figures compare with our
*optimistic* best-epoch-on-test column, not with our headline (test at the best validation epoch). They are
single runs (no seeds, no spread). Nothing here is derived: a figure the sources do not give is absent, never
averaged or guessed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

_DATA = yaml.safe_load((Path(__file__).with_name("paper_reference.yaml")).read_text())
PAPER_METHOD: str = _DATA["method"]  # our registry name of the paper's method
MAIN_SOURCE, RECHECK_SOURCE, PEFT_SOURCE = (_DATA["sources"][k] for k in ("main", "recheck", "peft"))
SELECTION_NOTE = ("paper figures are best-epoch-on-test single runs: compare them with our optimistic "
                  "'best-on-test' column, not with the headline")

# Dataset keys: (family, variant or None = any variant).
SCAN = ("scanobjectnn", "pb_t50_rs")
MN40 = ("modelnet40", None)
_KEYS = {"scan": SCAN, "mn40": MN40}


@dataclass(frozen=True)
class PaperRow:
    label: str  # as the paper names it
    method: str  # our method name (PAPER_METHOD) or the paper's baseline name
    backbone: str | None  # our backbone name when we have the same backbone, else None
    modality: str  # pretraining modality as the paper groups it: language | vision | audio | 3D | none ...
    params_m: float | None  # trainable parameters (M) as the paper reports them (Any2Point: excluding the head)
    acc: dict[tuple[str, str | None], float]  # dataset key -> overall accuracy (%)
    source: str
    voting: bool = False  # the figure uses test-time voting (the paper's *)


def _paper_row(r: dict) -> PaperRow:
    return PaperRow(r["label"], PAPER_METHOD, r["backbone"], r["modality"], r["params_m"],
                    {key: r[tag] for tag, key in _KEYS.items() if tag in r}, _DATA["sources"][r["source"]])


ANY2POINT_MAIN = [_paper_row(r) for r in _DATA["rows"] if r["source"] == "main"]
ANY2POINT_RECHECK = [_paper_row(r) for r in _DATA["rows"] if r["source"] == "recheck"]
PRIOR_WORK = [PaperRow(label, label, None, mod, p, {SCAN: s, MN40: m}, MAIN_SOURCE, voting=v)
              for label, mod, p, s, m, v in _DATA["prior_work"]]

# Any2Point accuracy minus the method's, in points, per dataset key.
PEFT_GAINS: dict[str, dict[tuple[str, str | None], float]] = {
    m: {_KEYS[tag]: v for tag, v in gains.items()} for m, gains in _DATA["peft_gains"].items()}


def dataset_key(dataset: str) -> tuple[str, str | None] | None:
    """Our ``family/variant`` string -> the paper's dataset key, or None when the paper has no such figure."""
    family, _, variant = dataset.partition("/")
    if family == SCAN[0] and variant in ("", SCAN[1]):
        return SCAN
    if family == MN40[0]:
        return MN40
    return None


def paper_acc(row: PaperRow, dataset: str) -> float | None:
    key = dataset_key(dataset)
    return row.acc.get(key) if key else None


def any2point_rows() -> list[PaperRow]:
    return ANY2POINT_MAIN + ANY2POINT_RECHECK


def peft_delta(method: str, dataset: str) -> float | None:
    """The paper's Δ of ``method`` to Any2Point (method minus Any2Point, our sign convention), or None."""
    key = dataset_key(dataset)
    gain = PEFT_GAINS.get(method, {}).get(key) if key else None
    return -gain if gain is not None else None
