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
from peft3d.core.studies import log_uniform, study_where

WD_RANGE = (1e-4, 0.1)
LR_FACTOR = 10.0


@dataclass
class Cell:
    """One backbone × weights × dataset × method cell: its grid specs (one per seed, and with a pooled plan one
    per variant too) and its study. ``objective_variants``: the variants a trial runs at (empty: the base's
    alone)."""

    specs: list[RunSpec]
    grid: str
    objective_variants: tuple[str, ...] = ()
    tuning_seed: int | None = None  # None: the grid's first seed

    @property
    def base(self) -> RunSpec:
        """What trials vary: the first spec (the grid's first seed; pooled, the first objective variant), at the
        tuning seed when the plan names one."""
        first = self.specs[0]
        return first if self.tuning_seed is None else first.replace(seed=self.tuning_seed)

    @property
    def study_name(self) -> str:
        b = self.base
        if self.objective_variants:
            digest = text_sha256(_identity_without(b, "seed", "variant"))[:8]
            where = study_where(b.dataset, self.objective_variants)
        else:
            digest = text_sha256(_identity_without(b, "seed"))[:8]  # (spaced JSON: kept, names existing studies)
            where = study_where(b.dataset, (b.variant,))
        preset = f"/{b.preset}" if b.preset else ""
        return f"{self.grid}/{b.backbone}[{b.weights}]/{where}/{b.method}{preset}/{digest}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.study_name)

    def trial_specs(self, tried: RunSpec) -> list[RunSpec]:
        """The runs of one trial: ``tried`` (the base with the trial's settings) at every objective variant."""
        return [tried.replace(variant=v) for v in self.objective_variants] or [tried]


def _identity_without(spec: RunSpec, *keys: str) -> str:
    ident = spec.identity()
    for k in keys:
        ident.pop(k)
    return json.dumps(ident, sort_keys=True)


def cells_of(specs: list[RunSpec], grid: str, objective_variants: tuple[str, ...] = (),
             tuning_seed: int | None = None) -> list[Cell]:
    """The grid's specs grouped into cells (specs that differ only by seed; with ``objective_variants``, by seed
    or dataset variant: one study tunes the cell for all its folds), in the grid's order."""
    pooled = ("seed", "variant") if objective_variants else ("seed",)
    groups: dict[str, list[RunSpec]] = {}
    for s in specs:
        groups.setdefault(_identity_without(s, *pooled), []).append(s)
    order = {v: i for i, v in enumerate(objective_variants)}

    def key(s: RunSpec) -> tuple:  # the base first: the first seed at the first objective variant
        return (s.seed, order.get(s.variant, len(order)), s.variant)

    return [Cell(sorted(g, key=key), grid, tuple(objective_variants), tuning_seed) for g in groups.values()]


def space_description(base: RunSpec, shared_space: bool = False) -> dict[str, Any]:
    b = base.budget
    return {"lr": log_uniform(b.lr / LR_FACTOR, b.lr * LR_FACTOR),
            "weight_decay": f"log-uniform [{WD_RANGE[0]:g}, {WD_RANGE[1]:g}]",
            "method": "its configured settings (shared space)" if shared_space
            else f"{base.method} config search_space()"}


def lr_edge_note(cell: Cell, best_lr: float | None) -> str | None:
    """A line when a study's best lr lies in the outer tenth (log scale) of its range, as the tables mark it (§):
    the optimum may lie outside the range. Said when the tuned runs start and in ``--progress``, so whoever runs a
    study sees it before its tuned runs are spent (the transfer study moved full fine-tuning's range on such a
    sign); None otherwise."""
    from peft3d.reporting.tables import lr_at_edge

    lr_range = space_description(cell.base)["lr"]
    if not lr_at_edge(best_lr, lr_range):
        return None
    return (f"§ {cell.study_name}: its best lr {best_lr:.2e} lies at the edge of its range ({lr_range}), so the "
            "optimum may lie outside it: look at the trials (bench report --tuned) before trusting the cell")


def suggest(trial: Any, base: RunSpec, shared_space: bool = False) -> RunSpec:
    """The trial's RunSpec: the cell's spec with the sampled lr, weight decay and (unless ``shared_space``: the
    same two-dimensional space for every method) the method's knobs, without test evaluation."""
    from peft3d.methods import config_class

    lr = trial.suggest_float("lr", base.budget.lr / LR_FACTOR, base.budget.lr * LR_FACTOR, log=True)
    wd = trial.suggest_float("weight_decay", *WD_RANGE, log=True)
    cls = config_class(base.method)
    knobs = {} if shared_space else cls.search_space(trial)
    cfg = cls.resolve({**dict(base.method_cfg), **knobs}, where=f"tune {base.method}").to_dict()
    # evaluate_test=False: the objective is validation alone, so a trial never evaluates the test split.
    return base.replace(method_cfg=cfg, budget=replace(base.budget, lr=lr, weight_decay=wd), evaluate_test=False)


def tuned_spec(spec: RunSpec, best: RunSpec) -> RunSpec:
    """A grid spec with the best trial's method config and budget (its own run_id)."""
    return spec.replace(method_cfg=dict(best.method_cfg), budget=best.budget)


def tune_stages(grid: str, seeds: list[int] | None) -> dict | None:
    """A grid with a ``tuning:`` block runs more than its own runs under ``bench tune``: each cell's trials
    (trials × objective variants, at the tuning seed) and, with a precision rule, up to its extra seeds on the
    covered folds. None for a grid without one (or without a trial count)."""
    from peft3d.grids.loader import expand_grid
    from peft3d.tuning.precision import most_extra_runs

    expanded = expand_grid(grid, seeds)
    tuning = expanded.tuning
    if not tuning.trials:
        return None
    cells = cells_of(expanded.specs, expanded.name, tuning.objective_variants, tuning.seed)
    per_cell = tuning.trials * max(1, len(tuning.objective_variants))
    stages = {"tuning trials": [(c.base.replace(evaluate_test=False), per_cell) for c in cells]}
    if tuning.precision is not None:
        stages["extra seeds (at most)"] = [(c.specs[0], most_extra_runs(c.specs, tuning.precision)) for c in cells]
    return stages

