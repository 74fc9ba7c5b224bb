"""Where a tuned grid stands and what it has cost (``bench tune --progress``): per cell, its trials (counted by
the equal-budget rule) and the tuned runs of its best configuration, with the wall time of the runs behind them.

A study that outlives a session needs this to resume, to size what is left and to report its cost; it reads
only the Optuna storage and the result files, so it runs beside the workers without touching them. Each run
takes one core (the CPU workers are pinned), so the summed wall time of the runs is their core-hours.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from peft3d.core.result import ResultInvalid, parse_result, read_result, wall_seconds
from peft3d.grids.plan import Precision
from peft3d.tuning.budget import counts
from peft3d.tuning.cells import Cell, lr_edge_note, tuned_spec
from peft3d.tuning.final import best_spec
from peft3d.tuning.precision import extra_runs, most_extra_runs
from peft3d.tuning.pricing import RULES, CostKey, Pricer, cost_key


@dataclass
class Spent:
    """The finished runs of one stage: how many, their summed wall seconds, when the first began and the last
    ended, and the stage's busy wall time: the union of its runs' intervals, so the hours between two sessions,
    when no worker ran, are not counted as the stage's wall time."""

    durations: list[float] = field(default_factory=list)
    began: datetime | None = None
    ended: datetime | None = None
    intervals: list[tuple[float, float]] = field(default_factory=list)  # (start, end), epoch seconds
    keys: list[CostKey | None] = field(default_factory=list)  # each run's cost key (None: a result without spec)

    def add(self, result: dict[str, Any]) -> None:
        s = wall_seconds(result.get("time") or {}) or 0.0
        self.durations.append(s)
        self.keys.append(cost_key(result["spec"]) if "spec" in result else None)
        if not result.get("finished_at"):
            return  # a result written by hand or by a test: counted, but it has no place in time
        end = datetime.strptime(result["finished_at"], "%Y-%m-%dT%H:%M:%S%z")
        start = datetime.fromtimestamp(end.timestamp() - s, end.tzinfo)
        self.began = start if self.began is None else min(self.began, start)
        self.ended = end if self.ended is None else max(self.ended, end)
        self.intervals.append((start.timestamp(), end.timestamp()))

    @property
    def busy_seconds(self) -> float:
        """The length of the union of the runs' intervals (a resumed run is placed as one interval ending when
        it finished: its segments' gaps are not known)."""
        total, reach = 0.0, float("-inf")
        for a, b in sorted(self.intervals):
            if b > reach:
                total += b - max(a, reach)
                reach = b
        return total

    @property
    def runs(self) -> int:
        return len(self.durations)

    @property
    def seconds(self) -> float:
        return sum(self.durations)

    def as_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "core_hours": round(self.seconds / 3600, 3),
                "began": self.began.isoformat() if self.began else None,
                "ended": self.ended.isoformat() if self.ended else None,
                "busy_hours": round(self.busy_seconds / 3600, 3)}


def _trial_results(root: Path, cell: Cell) -> list[dict[str, Any]]:
    """The successful trial runs of a cell (tune/<cell>/runs/*.json), read by the results' own validating reader."""
    out = []
    for path in sorted((root / "tune" / cell.slug / "runs").glob("*.json")):
        try:
            r = parse_result(path)
        except ResultInvalid:
            continue  # not a valid result (e.g. a file from elsewhere): it counts as no run, as everywhere
        if r.ok:
            out.append(r.to_dict())
    return out


@dataclass
class Left:
    """One cell's runs still to go, by cost key, and the extra-seed runs its precision rule may still add (priced
    at the cell's base: the rule covers all-label folds)."""

    runs: list[CostKey]
    may_add: int
    extra_key: CostKey


def cell_progress(cell: Cell, study: Any | None, root: Path, grid: str, n_trials: int,
                  precision: Precision | None = None) -> tuple[dict[str, Any], list[Spent], Left]:
    """One cell's trials, its tuned runs and their cost (the row, its two stages for the totals, and what is left);
    ``study`` None when it has not started. With a precision rule, the tuned runs include the extra seeds it has
    asked for, and ``may_add`` the runs it may still ask for."""
    trials, finals = Spent(), Spent()
    for r in _trial_results(root, cell):
        trials.add(r)
    c = counts(study) if study is not None else {"counted": 0, "complete": 0, "pruned": 0, "failed": 0,
                                                  "running": 0}
    best, trial = best_spec(study) if study is not None else (None, None)
    tuned, may_add = list(cell.specs), most_extra_runs(cell.specs, precision)
    left = [cost_key(s) for s in cell.trial_specs(cell.base)] * max(0, n_trials - c["counted"])
    if best is not None:
        tuned = [tuned_spec(s, best).replace(grid=f"{grid}.tuned") for s in cell.specs]
        extra, may_add = extra_runs(tuned, precision, root)
        tuned += extra
        for s in tuned:
            r = read_result(root, s.run_id)
            if r is not None and r.ok:
                finals.add(r.to_dict())
            else:
                left.append(cost_key(s))
    else:
        left += [cost_key(s) for s in tuned]
    b = cell.base
    row = {"cell": f"{b.backbone}[{b.weights}]/{b.method}", "study": cell.study_name,
           "trials": {**{k: c[k] for k in ("counted", "complete", "pruned", "failed", "running")}, "of": n_trials,
                      **trials.as_dict()},
           "best": {"value": trial.value, "params": dict(trial.params),
                    "lr_edge_note": lr_edge_note(cell, trial.params.get("lr"))} if trial is not None else None,
           "final": {"of": len(tuned), "may_add": may_add, **finals.as_dict()}}
    return row, [trials, finals], Left(left, may_add, cost_key(b))


def grid_progress(grid: str, cells: list[Cell], root: Path, storage: Any, n_trials: int,
                  precision: Precision | None = None,
                  perf_ratios: dict[tuple[str, str], float] | None = None) -> dict[str, Any]:
    """Every cell's progress, the totals, and an estimate of the core-hours left: each run left priced from the
    finished runs most like it (:mod:`peft3d.tuning.pricing`; ``perf_ratios`` from ``bench perf`` records). An
    upper bound for the trials: a pruned trial stops after its first fold or two. With a precision rule, the
    extra seeds it may still add are counted apart."""
    import optuna

    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    parts = [cell_progress(c, optuna.load_study(study_name=c.study_name, storage=storage)
                           if c.study_name in names else None, root, grid, n_trials, precision) for c in cells]
    rows = [row for row, _, _ in parts]
    spent = [stage for _, stages, _ in parts for stage in stages]
    pricer = Pricer.of([(key, seconds) for stage in spent for key, seconds in zip(stage.keys, stage.durations,
                                                                                   strict=True) if key is not None],
                       perf_ratios or {})
    overall = pricer.overall
    return {"grid": grid, "cells": rows,
            "total": {"runs": sum(s.runs for s in spent),
                      "core_hours": round(sum(s.seconds for s in spent) / 3600, 2),
                      "cells_done": sum(r["final"]["runs"] == r["final"]["of"] and not r["final"]["may_add"]
                                        for r in rows),
                      "cells": len(rows), "median_run_s": round(overall, 1) if overall else None,
                      **_left([left for _, _, left in parts], pricer)}}


def _left(lefts: list[Left], pricer: Pricer) -> dict[str, Any]:
    """Runs and core-hours left (and possible extra seeds), each run at its price, with how many runs each pricing
    rule priced and the core-hours left per method (what cutting a method would save)."""
    extra_seconds = 0.0
    by_rule = dict.fromkeys(RULES, 0)
    by_method: dict[str, float] = {}
    for left in lefts:
        for key in left.runs:
            price, rule = pricer.price(key)
            by_method[key[1]] = by_method.get(key[1], 0.0) + (price or 0.0)
            by_rule[rule] += 1
        extra_seconds += left.may_add * (pricer.price(left.extra_key)[0] or 0.0)
    hours = (lambda s: round(s / 3600, 1)) if pricer.overall else (lambda s: None)
    return {"runs_left_at_most": sum(len(left.runs) for left in lefts),
            "core_hours_left_at_most": hours(sum(by_method.values())),
            "core_hours_left_by_method": {m: hours(s) for m, s in by_method.items()},
            "runs_left_by_rule": by_rule, "extra_seed_runs_possible": sum(left.may_add for left in lefts),
            "extra_seed_core_hours_possible": hours(extra_seconds)}


def progress_lines(p: dict[str, Any]) -> list[str]:
    """The human view: one line per cell, then the totals."""
    lines = [f"{'cell':34} {'trials':>14} {'best val':>8} {'lr':>10} {'final':>7} {'core-h':>7}  "
             "trials | tuned runs: first start → last end (wall hours with a run going)"]
    for r in p["cells"]:
        t, f, best = r["trials"], r["final"], r["best"]
        trials = f"{t['counted']}/{t['of']}" + (f" ({t['pruned']} pr)" if t["pruned"] else "") \
            + (" +running" if t["running"] else "")
        val = f"{best['value']:.3f}" if best else "-"
        lr = f"{best['params']['lr']:.2e}" if best and "lr" in best["params"] else "-"
        lr += " §" if best and best.get("lr_edge_note") else "  "
        hours = t["core_hours"] + f["core_hours"]
        lines.append(f"{r['cell']:34} {trials:>14} {val:>8} {lr:>10} {f['runs']:>3}/{f['of']:<3} {hours:>7.2f}  "
                     f"{_span(t)} | {_span(f)}")
    lines += [r["best"]["lr_edge_note"] for r in p["cells"] if r["best"] and r["best"].get("lr_edge_note")]
    tot = p["total"]
    left = (f"at most {tot['runs_left_at_most']} runs ≈ {tot['core_hours_left_at_most']} core-hours left "
            f"({_rules_line(tot)})") if tot["median_run_s"] else "no run finished yet"
    if tot["extra_seed_runs_possible"] and tot["median_run_s"]:
        left += (f"; the precision rule may add up to {tot['extra_seed_runs_possible']} runs ≈ "
                 f"{tot['extra_seed_core_hours_possible']} core-hours more")
    lines.append(f"{tot['cells_done']}/{tot['cells']} cells done; {tot['runs']} runs, {tot['core_hours']} "
                 f"core-hours spent; {left}")
    if tot["median_run_s"] and tot["core_hours_left_by_method"]:
        lines.append("core-hours left by method (without extra seeds): " + ", ".join(
            f"{m} {h}" for m, h in tot["core_hours_left_by_method"].items()))
    return lines


def _rules_line(tot: dict[str, Any]) -> str:
    """How the runs left were priced, e.g. 'runs priced from the finished runs most like them: 30 at the median of
    their backbone × method × labels; 39 scaled from the linear probe by the method's cost ratio on other
    backbones'."""
    said = {"own": "at the median of their backbone × method × labels",
            "ratio": "scaled from the linear probe by the method's cost ratio on other backbones",
            "perf": "scaled from the linear probe by its `bench perf` step-time ratio",
            "floor": "at the linear probe's median on their backbone (a lower bound; --perf prices them better)",
            "overall": f"at the overall median, {tot['median_run_s']:.0f} s (rough)"}
    parts = [f"{n} {said[rule]}" for rule, n in tot["runs_left_by_rule"].items() if n]
    return "runs priced from the finished runs most like them: " + "; ".join(parts) if parts else "none left"


def _span(stage: dict[str, Any]) -> str:
    """'began → ended (busy hours)' of a stage's finished runs; '-' when none."""
    if not stage["began"]:
        return "-"
    a, b = datetime.fromisoformat(stage["began"]), datetime.fromisoformat(stage["ended"])
    return f"{a:%m-%d %H:%M}→{b:%m-%d %H:%M} ({stage['busy_hours']:.1f} h busy)"
