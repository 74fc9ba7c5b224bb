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
  precision:                       # seeds until precise (optional): after a cell's tuned runs on the grid's seeds,
    ci_half_width: 3.0             #   while its table cell's 95% CI half-width (points) is wider than this,
    extra_seeds: [3, 4, 5]         #   run the next of these seeds on all its folds (in order; at most all of them)
    datasets: [sweethome3d/cv5]    #   the table cells the rule covers (default: all), named as tables name them
  finish_cells: true               # run each cell's tuned runs as soon as its study is full (default false: every
                                   #   study first, then every tuned run); the grid's order is then the order in
                                   #   which results land, for every worker (`bench tune`, `bench submit --tune`)
```
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from peft3d.core.errors import ConfigError

SAMPLERS = ("tpe", "qmc")
SPACES = ("with_knobs", "shared")


@dataclass(frozen=True)
class Precision:
    """The seeds-until-precise rule (:mod:`peft3d.tuning.precision` applies it)."""

    ci_half_width: float
    extra_seeds: tuple[int, ...]
    datasets: tuple[str, ...] = ()  # empty: every table cell of the grid

    def covers(self, dataset: str) -> bool:
        return not self.datasets or dataset in self.datasets

    def describe(self) -> str:
        where = f" ({', '.join(self.datasets)})" if self.datasets else ""
        return (f"while a cell's 95% CI half-width{where} exceeded {self.ci_half_width:g} points, the next of seeds "
                f"{list(self.extra_seeds)} ran on all its folds")


@dataclass(frozen=True)
class TuningPlan:
    trials: int | None = None
    sampler: str = "tpe"
    space: str = "with_knobs"
    objective_variants: tuple[str, ...] = ()
    seed: int | None = None
    precision: Precision | None = None
    finish_cells: bool = False  # when results land, not what they are: no study name or run depends on it

    @property
    def pooled(self) -> bool:
        """A cell spans the dataset's variants (its study tunes once for all of them)."""
        return bool(self.objective_variants)


def parse_plan(block: Any, where: str) -> TuningPlan:
    """The ``tuning:`` mapping of a grid as a TuningPlan; one line naming the key and the fix otherwise."""
    if block is None:
        return TuningPlan()
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: tuning must be a mapping (trials, sampler, space, objective_variants, seed, "
                          "precision, finish_cells)")
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
    precision = parse_precision(block.get("precision"), where)
    finish_cells = block.get("finish_cells", False)
    if not isinstance(finish_cells, bool):
        raise ConfigError(f"{where}: tuning.finish_cells must be true or false, got {finish_cells!r}")
    return TuningPlan(trials, block.get("sampler", "tpe"), space, tuple(variants), seed, precision, finish_cells)


def _whole(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def parse_precision(block: Any, where: str) -> Precision | None:
    """``tuning.precision`` as a :class:`Precision`; one line naming the key and the fix otherwise."""
    if block is None:
        return None
    keys = {"ci_half_width", "extra_seeds", "datasets"}
    if not isinstance(block, dict) or not {"ci_half_width", "extra_seeds"} <= set(block) or set(block) - keys:
        raise ConfigError(f"{where}: tuning.precision must be a mapping with ci_half_width (points), extra_seeds "
                          f"(a list of seeds) and optionally datasets, got {block!r}")
    width = block["ci_half_width"]
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ConfigError(f"{where}: tuning.precision.ci_half_width must be a number of points > 0, got {width!r}")
    seeds = block["extra_seeds"]
    if not isinstance(seeds, list) or not seeds or not all(_whole(x) for x in seeds) or len(set(seeds)) < len(seeds):
        raise ConfigError(f"{where}: tuning.precision.extra_seeds must be a non-empty list of distinct whole "
                          f"numbers >= 0, got {seeds!r}")
    datasets = block.get("datasets") or []
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        raise ConfigError(f"{where}: tuning.precision.datasets must be a list of table cell names (e.g. "
                          f"sweethome3d/cv5), got {datasets!r}")
    return Precision(float(width), tuple(seeds), tuple(datasets))


def check_precision_seeds(plan: TuningPlan, seeds: set[int], where: str) -> None:
    """The extra seeds are new seeds: neither the grid's nor the tuning seed (their runs would be counted twice or
    be the runs that chose the configuration). The covered cells are checked by the tuner, which names them."""
    rule = plan.precision
    if rule is None:
        return
    taken = sorted(set(rule.extra_seeds) & (seeds | ({plan.seed} if plan.seed is not None else set())))
    if taken:
        raise ConfigError(f"{where}: tuning.precision.extra_seeds {taken} are already the grid's seeds or its "
                          "tuning seed; fix: list seeds the grid does not run")


def check_plan_against(plan: TuningPlan, variants_by_dataset: dict[str, set[str]], where: str) -> None:
    """Every dataset of a pooled grid must list every objective variant (a trial runs each of them)."""
    for family, have in variants_by_dataset.items():
        missing = [v for v in plan.objective_variants if v not in have]
        if missing:
            raise ConfigError(f"{where}: tuning.objective_variants {missing} are not among the grid's "
                              f"{family} variants {sorted(have)}; fix: list them under datasets")
