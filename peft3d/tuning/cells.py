"""What ``bench tune`` tunes: one cell per backbone × weights × dataset × method (its grid specs, one per seed,
and its study's name), and the search space every cell samples from.

The space is the same for every method — the learning rate (log-uniform, the grid's lr ÷/× 10) and weight
decay (log-uniform 1e-4-0.1) — plus the method's own knobs (``MethodConfig.search_space``), so no method gets
a wider search than another.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from peft3d.core.digest import text_sha256
from peft3d.core.spec import RunSpec

WD_RANGE = (1e-4, 0.1)
LR_FACTOR = 10.0


@dataclass
class Cell:
    """One backbone × weights × dataset × method cell: its grid specs (one per seed) and its study."""

    specs: list[RunSpec]
    grid: str

    @property
    def base(self) -> RunSpec:
        return self.specs[0]  # tuning runs at the grid's first seed

    @property
    def study_name(self) -> str:
        b = self.base
        digest = text_sha256(_identity_without_seed(b))[:8]  # (spaced JSON: kept, names existing studies)
        preset = f"/{b.preset}" if b.preset else ""
        return f"{self.grid}/{b.backbone}[{b.weights}]/{b.dataset}:{b.variant}/{b.method}{preset}/{digest}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.study_name)


def _identity_without_seed(spec: RunSpec) -> str:
    ident = spec.identity()
    ident.pop("seed")
    return json.dumps(ident, sort_keys=True)


def cells_of(specs: list[RunSpec], grid: str) -> list[Cell]:
    """The grid's specs grouped into cells (specs that differ only by seed), in the grid's order."""
    groups: dict[str, list[RunSpec]] = {}
    for s in specs:
        groups.setdefault(_identity_without_seed(s), []).append(s)
    return [Cell(sorted(g, key=lambda s: s.seed), grid) for g in groups.values()]


def space_description(base: RunSpec) -> dict[str, Any]:
    b = base.budget
    return {"lr": f"log-uniform [{b.lr / LR_FACTOR:.3g}, {b.lr * LR_FACTOR:.3g}]",
            "weight_decay": f"log-uniform [{WD_RANGE[0]:g}, {WD_RANGE[1]:g}]",
            "method": f"{base.method} config search_space()"}


def suggest(trial: Any, base: RunSpec) -> RunSpec:
    """The trial's RunSpec: the cell's spec with the sampled lr, weight decay and method knobs."""
    from peft3d.methods import config_class

    lr = trial.suggest_float("lr", base.budget.lr / LR_FACTOR, base.budget.lr * LR_FACTOR, log=True)
    wd = trial.suggest_float("weight_decay", *WD_RANGE, log=True)
    cls = config_class(base.method)
    knobs = cls.search_space(trial)
    cfg = cls.resolve({**dict(base.method_cfg), **knobs}, where=f"tune {base.method}").to_dict()
    return base.replace(method_cfg=cfg, budget=replace(base.budget, lr=lr, weight_decay=wd))


def tuned_spec(spec: RunSpec, best: RunSpec) -> RunSpec:
    """A grid spec with the best trial's method config and budget (its own run_id)."""
    return spec.replace(method_cfg=dict(best.method_cfg), budget=best.budget)
