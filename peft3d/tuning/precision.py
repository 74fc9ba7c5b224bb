"""Seeds until precise: a grid's ``tuning.precision`` rule adds seeds to a tuned cell whose confidence interval
is still wider than the grid asks for.

A study states its target precision up front (e.g. a 95% CI half-width of at most 3 points per headline cell),
but how noisy an arm is shows only once it has run: a frozen linear probe may meet the target on the grid's
seeds where full fine-tuning of a randomly initialised transformer does not. Giving every cell the largest
seed count would spend most of the compute on cells that were already precise, so the rule adds seeds where
they are needed, in a fixed order:

1. the cell's tuned runs on the grid's seeds finish;
2. per table cell it covers (the dataset as tables name it: a k-fold partition pools its folds), the 95% CI
   half-width is computed exactly as the table computes it (:func:`peft3d.analysis.stats.bootstrap_ci` over
   the (fold, seed) test accuracies, in points);
3. while it is wider than ``ci_half_width`` and an extra seed is left, the next extra seed runs on every fold
   of that table cell, and step 2 repeats.

The decision is a pure function of the committed results, so any checkout rebuilds the same run list (the
manifest's, which the tables count as expected) and a resumed study continues it. The rule stops on the CI's
width, never on the mean or on a comparison, so it does not steer which arm wins; what it costs is written
beside the table (:meth:`Precision.describe`).
"""
from __future__ import annotations

from pathlib import Path

from peft3d.analysis.stats import bootstrap_ci
from peft3d.core.errors import ConfigError
from peft3d.core.result import read_result
from peft3d.core.spec import RunSpec
from peft3d.grids.plan import Precision
from peft3d.reporting.folds import pooling


def half_width(accuracies_pct: list[float]) -> float:
    """Half the width of the table's 95% CI of the mean (points); inf below two values."""
    lo, hi = bootstrap_ci(accuracies_pct)
    return (hi - lo) / 2 if len(accuracies_pct) >= 2 else float("inf")


def by_table_cell(specs: list[RunSpec]) -> dict[str, list[RunSpec]]:
    """The specs grouped by the dataset their table cell shows (``sweethome3d/cv5`` for the folds f0..f4)."""
    where = pooling(specs)
    groups: dict[str, list[RunSpec]] = {}
    for s in specs:
        groups.setdefault(where[(s.dataset, s.variant)].dataset, []).append(s)
    return groups


def check_covered(rule: Precision | None, specs: list[RunSpec], where: str) -> None:
    """Every table cell the rule names is one the grid has (one line naming them otherwise)."""
    if rule is None:
        return
    have = set(by_table_cell(specs))
    unknown = sorted(set(rule.datasets) - have)
    if unknown:
        raise ConfigError(f"{where}: tuning.precision.datasets {unknown} are not table cells of the grid; its "
                          f"cells: {sorted(have)}")


def test_accuracies(specs: list[RunSpec], root: Path) -> list[float] | None:
    """The runs' test accuracies (%) — None while one has no successful result (nothing to decide on yet)."""
    out = []
    for s in specs:
        r = read_result(root, s.run_id)
        if r is None or not r.ok or r.metrics is None:
            return None
        out.append(100 * r.metrics.test_acc)
    return out


def extra_runs(specs: list[RunSpec], rule: Precision | None, root: Path) -> tuple[list[RunSpec], int]:
    """The extra-seed runs the rule asks for, given the results under ``root``, and how many more it may still
    ask for (0 once every covered table cell is precise or out of seeds). ``specs``: one tuned cell's runs on the
    grid's seeds (every fold and seed)."""
    if rule is None:
        return [], 0
    runs: list[RunSpec] = []
    undecided = 0
    for dataset, group in by_table_cell(specs).items():
        if rule.covers(dataset):
            added, open_seeds = _seeds_until_precise(group, rule, root)
            runs += added
            undecided += open_seeds * len({s.variant for s in group})
    return runs, undecided


def _seeds_until_precise(group: list[RunSpec], rule: Precision, root: Path) -> tuple[list[RunSpec], int]:
    """The runs of the extra seeds added so far to one table cell, and the extra seeds still undecided."""
    one_per_fold = list({s.variant: s for s in group}.values())
    have, added = list(group), []
    for i, seed in enumerate(rule.extra_seeds):
        accs = test_accuracies(have, root)
        if accs is None:
            return added, len(rule.extra_seeds) - i  # results pending: the later seeds are still open
        if half_width(accs) <= rule.ci_half_width:
            return added, 0
        more = [s.replace(seed=seed) for s in one_per_fold]
        have += more
        added += more
    return added, 0


def most_extra_runs(specs: list[RunSpec], rule: Precision | None) -> int:
    """The most runs the rule can add to one cell (every extra seed on every covered fold): what a cell that has
    not been tuned yet may still ask for."""
    if rule is None:
        return 0
    folds = sum(len({s.variant for s in g}) for d, g in by_table_cell(specs).items() if rule.covers(d))
    return folds * len(rule.extra_seeds)
