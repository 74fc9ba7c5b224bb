"""A grid's ``tuning:`` block: how ``bench tune`` searches the grid's cells (torch-free; validated on load).

```yaml
tuning:
  trials: 8                        # default for --trials
  sampler: qmc                     # tpe (default) | qmc: a seeded scrambled Sobol sequence, the same points in
                                   #   every study of the same space (every arm sees the same candidates)
  space: shared                    # with_knobs (default): lr, weight decay and the method's knobs | shared: lr and
                                   #   weight decay only, the same space for every method
  objective_variants: [f0, f1, f2] # pool a cell over the dataset's variants (e.g. the folds of a k-fold split):
                                   #   a trial runs at each of these, the objective is their mean validation accuracy
  seed: 100                        # the seed trials run at (default: the grid's first seed). One outside the
                                   #   grid's seeds keeps the reported runs apart from the runs that chose the
                                   #   configuration (no winner's curse on the tuning seed's runs)
```
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from peft3d.core.errors import ConfigError

SAMPLERS = ("tpe", "qmc")
SPACES = ("with_knobs", "shared")


@dataclass(frozen=True)
class TuningPlan:
    trials: int | None = None
    sampler: str = "tpe"
    space: str = "with_knobs"
    objective_variants: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def pooled(self) -> bool:
        """A cell spans the dataset's variants (its study tunes once for all of them)."""
        return bool(self.objective_variants)


def parse_plan(block: Any, where: str) -> TuningPlan:
    """The ``tuning:`` mapping of a grid as a TuningPlan; one line naming the key and the fix otherwise."""
    if block is None:
        return TuningPlan()
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: tuning must be a mapping (trials, sampler, space, objective_variants, seed)")
    known = {f.name for f in fields(TuningPlan)}
    unknown = sorted(set(block) - known)
    if unknown:
        raise ConfigError(f"{where}: tuning has unknown key(s) {unknown}; allowed: {sorted(known)}")
    trials = block.get("trials")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise ConfigError(f"{where}: tuning.trials must be a whole number >= 1, got {trials!r}")
    for key, allowed in (("sampler", SAMPLERS), ("space", SPACES)):
        if key in block and block[key] not in allowed:
            raise ConfigError(f"{where}: tuning.{key} must be one of {list(allowed)}, got {block[key]!r}")
    variants = block.get("objective_variants") or []
    if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
        raise ConfigError(f"{where}: tuning.objective_variants must be a list of dataset variant names")
    if len(set(variants)) != len(variants):
        raise ConfigError(f"{where}: tuning.objective_variants lists a variant twice: {variants}")
    seed = block.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"{where}: tuning.seed must be a whole number >= 0, got {seed!r}")
    space = block.get("space", "with_knobs")
    return TuningPlan(trials, block.get("sampler", "tpe"), space, tuple(variants), seed)


def check_plan_against(plan: TuningPlan, variants_by_dataset: dict[str, set[str]], where: str) -> None:
    """Every dataset of a pooled grid must list every objective variant (a trial runs each of them)."""
    for family, have in variants_by_dataset.items():
        missing = [v for v in plan.objective_variants if v not in have]
        if missing:
            raise ConfigError(f"{where}: tuning.objective_variants {missing} are not among the grid's "
                              f"{family} variants {sorted(have)}; fix: list them under datasets")
