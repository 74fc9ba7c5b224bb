"""``bench data check``: read a dataset through its real reader and report what is right and what is not.

Hard problems (missing or unreadable files, wrong shapes or dtypes, NaN/Inf, labels out of range) are errors.
Counts, class coverage or points per sample that differ from the published figures are warnings — a partial
download is the usual cause — and become errors with ``strict``. Torch-free.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from peft3d.core.digest import array_sha256
from peft3d.core.errors import DataError
from peft3d.datasets import DATASETS, split_name
from peft3d.datasets.base import Split, stratified_val_split, validate_split

LEVELS = ("ok", "note", "warning", "error")


@dataclass
class Finding:
    level: str  # one of LEVELS
    message: str


@dataclass
class Report:
    dataset: str
    variant: str
    root: str | None
    strict: bool
    findings: list[Finding] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    points_per_sample: dict[str, int] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    per_class: dict[str, list[int]] = field(default_factory=dict)
    fix: str | None = None

    def add(self, level: str, message: str) -> None:
        if level == "warning" and self.strict:
            level, message = "error", f"{message} [error because of --strict]"
        self.findings.append(Finding(level, message))

    @property
    def valid(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    @property
    def exit_code(self) -> int:
        return 0 if self.valid else 2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(valid=self.valid, exit_code=self.exit_code, name=f"{self.dataset}/{self.variant}")
        return d


def check(name: str, root: str | None, strict: bool = False, val_fraction: float = 0.1,
          split_seed: int = 0) -> Report:
    """Check dataset ``name`` (``family`` or ``family/variant``) under ``root``; never raises DataError."""
    family, variant = split_name(name)
    fam = DATASETS.get(family)()
    variant = variant or fam.default_variant
    report = Report(family, variant, root, strict)
    report.fix = fam.info()
    if variant not in fam.variants:
        report.add("error", f"{family} has no variant {variant!r}; choose one of {list(fam.variants)}")
        return report
    try:
        train, test, names, source = fam.load_raw(variant, root)
        for split, which in ((train, "train"), (test, "test")):
            validate_split(split, len(names), f"{family}/{variant} {which}")
        expected = fam.expected(variant, root) or {}
    except DataError as e:
        report.add("error", str(e))
        return report
    report.source, report.expected, report.class_names = source, expected, list(names)
    _structure(report, train, test, names)
    _counts(report, train, test, names, expected)
    _balance(report, train, test, names)
    _val_split(report, train, val_fraction, split_seed)
    if report.valid:
        report.fix = None
    return report


def _structure(r: Report, train: Split, test: Split, names: list[str]) -> None:
    files = r.source.get("files") or {"folder": r.source.get("root", "(generated)")}
    r.add("ok", "files present and readable: " + ", ".join(str(v) for v in files.values()))
    r.add("ok", f"points float32 (N, P, 3), labels integer in [0, {len(names) - 1}], no NaN/Inf")
    if r.source.get("export_of"):
        r.add("note", f"this is a peft3d export of {r.source['export_of']} in a published layout, not the real "
                      f"dataset: counts and classes are checked against its manifest")


def _counts(r: Report, train: Split, test: Split, names: list[str], exp: dict[str, Any]) -> None:
    r.counts = {"train": len(train), "test": len(test)}
    r.points_per_sample = {"train": int(train.points.shape[1]), "test": int(test.points.shape[1])}
    basis = exp.get("basis", "published")
    for split, n in r.counts.items():
        if n == 0:
            r.add("error", f"{split}: 0 samples — nothing to train or test on; point --data-root at the full dataset")
        want = (exp.get("counts") or {}).get(split)
        if want is None:
            continue
        if n == want:
            r.add("ok", f"{split}: {n:,} samples ({basis}: {want:,})")
        else:
            r.add("warning", f"{split}: {n:,} samples but {basis} count is {want:,} ({n - want:+,}) — a partial or "
                             f"different download is the usual cause; re-download the files")
    if exp.get("classes") and exp["classes"] != len(names):
        r.add("warning", f"{len(names)} classes but {basis}: {exp['classes']}")
    want_p = exp.get("points")
    for split, p in r.points_per_sample.items():
        if want_p and p != want_p:
            r.add("warning", f"{split}: {p} points per sample, {basis}: {want_p}")


def _balance(r: Report, train: Split, test: Split, names: list[str]) -> None:
    c = len(names)
    for split, data in (("train", train), ("test", test)):
        hist = np.bincount(data.labels, minlength=c)[:c]
        r.per_class[split] = [int(x) for x in hist]
        absent = [names[i] for i in np.flatnonzero(hist == 0)]
        if absent:
            r.add("warning", f"{split}: {len(absent)} class(es) have no samples ({', '.join(absent[:6])}"
                             f"{', …' if len(absent) > 6 else ''}) — an incomplete download?")
        elif len(data):
            r.add("ok", f"{split}: all {c} classes present, {hist.min()}–{hist.max()} samples per class "
                        f"(max/min {hist.max() / hist.min():.1f}×)")


def _val_split(r: Report, train: Split, fraction: float, seed: int) -> None:
    tr, va = stratified_val_split(train.labels, fraction, seed)
    r.counts.update(train_after_val=len(tr), val=len(va))
    r.source["val_indices_sha256"] = array_sha256(va)[:16]
    r.add("ok", f"validation split (class-stratified, {fraction:.0%} of train, seed {seed}): {len(tr):,} train / "
                f"{len(va):,} val / {r.counts['test']:,} test; val indices sha256 "
                f"{r.source['val_indices_sha256']}")
