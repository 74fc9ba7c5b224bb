"""Where a tuned grid stands and what it has cost (``bench tune --progress``): per cell, its trials (counted by
the equal-budget rule) and the tuned runs of its best configuration, with the wall time of the runs behind them.

A study that outlives a session needs this to resume, to size what is left and to report its cost; it reads
only the Optuna storage and the result files, so it runs beside the workers without touching them. Each run
takes one core (the CPU workers are pinned), so the summed wall time of the runs is their core-hours.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from peft3d.core.result import ResultInvalid, parse_result, read_result
from peft3d.grids.plan import Precision
from peft3d.tuning.budget import counts
from peft3d.tuning.cells import Cell, tuned_spec
from peft3d.tuning.final import best_spec
from peft3d.tuning.precision import extra_runs, most_extra_runs


@dataclass
class Spent:
    """The finished runs of one stage: how many, their summed wall seconds, when the first began and the last
    ended, and the stage's busy wall time: the union of its runs' intervals, so the hours between two sessions,
    when no worker ran, are not counted as the stage's wall time."""

    durations: list[float] = field(default_factory=list)
    began: datetime | None = None
    ended: datetime | None = None
    intervals: list[tuple[float, float]] = field(default_factory=list)  # (start, end), epoch seconds

    def add(self, result: dict[str, Any]) -> None:
        t = result.get("time") or {}
        # wall_s counts every segment of a resumed run; older results carry total_s, their last segment only
        s = float(t.get("wall_s", t.get("total_s", 0.0)))
        self.durations.append(s)
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


def cell_progress(cell: Cell, study: Any | None, root: Path, grid: str, n_trials: int,
                  precision: Precision | None = None) -> tuple[dict[str, Any], list[Spent]]:
    """One cell's trials, its tuned runs and their cost (the row, and its two stages for the totals); ``study``
    None when it has not started. With a precision rule, the tuned runs include the extra seeds it has asked for,
    and ``may_add`` the runs it may still ask for."""
    trials, finals = Spent(), Spent()
    for r in _trial_results(root, cell):
        trials.add(r)
    c = counts(study) if study is not None else {"counted": 0, "complete": 0, "pruned": 0, "failed": 0,
                                                  "running": 0}
    best, trial = best_spec(study) if study is not None else (None, None)
    tuned, may_add = list(cell.specs), most_extra_runs(cell.specs, precision)
    if best is not None:
        tuned = [tuned_spec(s, best).replace(grid=f"{grid}.tuned") for s in cell.specs]
        extra, may_add = extra_runs(tuned, precision, root)
        tuned += extra
        for s in tuned:
            r = read_result(root, s.run_id)
            if r is not None and r.ok:
                finals.add(r.to_dict())
    b = cell.base
    row = {"cell": f"{b.backbone}[{b.weights}]/{b.method}", "study": cell.study_name,
           "trials": {**{k: c[k] for k in ("counted", "complete", "pruned", "failed", "running")}, "of": n_trials,
                      **trials.as_dict()},
           "best": {"value": trial.value, "params": dict(trial.params)} if trial is not None else None,
           "final": {"of": len(tuned), "may_add": may_add, **finals.as_dict()}}
    return row, [trials, finals]


def grid_progress(grid: str, cells: list[Cell], root: Path, storage: Any, n_trials: int,
                  precision: Precision | None = None) -> dict[str, Any]:
    """Every cell's progress, the totals, and an estimate of the core-hours left: each cell's runs left at the
    median run of its method (a method's steps and epochs to plateau differ: full fine-tuning and Any2Point cost
    more than the linear probe), at the median of all runs for a method with none finished yet (counted apart,
    as that part is the rough one). An upper bound for the trials: a pruned trial stops after its first fold or
    two. With a precision rule, the extra seeds it may still add are counted apart."""
    import optuna

    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    pairs = [cell_progress(c, optuna.load_study(study_name=c.study_name, storage=storage)
                           if c.study_name in names else None, root, grid, n_trials, precision) for c in cells]
    rows = [row for row, _ in pairs]
    spent = [stage for _, stages in pairs for stage in stages]
    durations = [d for s in spent for d in s.durations]
    per_run = statistics.median(durations) if durations else None
    per_method = _median_run_by_method(cells, [stages for _, stages in pairs])
    left = _left(rows, cells, n_trials, per_method, per_run)
    return {"grid": grid, "cells": rows,
            "total": {"runs": sum(s.runs for s in spent),
                      "core_hours": round(sum(s.seconds for s in spent) / 3600, 2),
                      "cells_done": sum(r["final"]["runs"] == r["final"]["of"] and not r["final"]["may_add"]
                                        for r in rows),
                      "cells": len(rows), "median_run_s": round(per_run, 1) if per_run else None,
                      "median_run_s_by_method": {m: round(v, 1) for m, v in per_method.items()},
                      **left}}


def _median_run_by_method(cells: list[Cell], stages: list[list[Spent]]) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for cell, cell_stages in zip(cells, stages, strict=True):
        by.setdefault(cell.base.method, []).extend(d for st in cell_stages for d in st.durations)
    return {m: statistics.median(d) for m, d in by.items() if d}


def _left(rows: list[dict[str, Any]], cells: list[Cell], n_trials: int, per_method: dict[str, float],
          per_run: float | None) -> dict[str, Any]:
    """Runs and core-hours left (and possible extra seeds), each cell's at its method's median run."""
    runs = extra = unmeasured = 0
    seconds = extra_seconds = 0.0
    for r, c in zip(rows, cells, strict=True):
        cell_runs = max(0, n_trials - r["trials"]["counted"]) * max(1, len(c.objective_variants)) \
            + r["final"]["of"] - r["final"]["runs"]
        cost = per_method.get(c.base.method, per_run or 0.0)
        runs, extra = runs + cell_runs, extra + r["final"]["may_add"]
        seconds, extra_seconds = seconds + cell_runs * cost, extra_seconds + r["final"]["may_add"] * cost
        if c.base.method not in per_method:
            unmeasured += cell_runs
    hours = (lambda s: round(s / 3600, 1)) if per_run else (lambda s: None)
    return {"runs_left_at_most": runs, "core_hours_left_at_most": hours(seconds),
            "runs_left_at_the_overall_median": unmeasured,
            "extra_seed_runs_possible": extra, "extra_seed_core_hours_possible": hours(extra_seconds)}


def progress_lines(p: dict[str, Any]) -> list[str]:
    """The human view: one line per cell, then the totals."""
    lines = [f"{'cell':34} {'trials':>14} {'best val':>8} {'lr':>9} {'final':>7} {'core-h':>7}  "
             "trials | tuned runs: first start → last end (wall hours with a run going)"]
    for r in p["cells"]:
        t, f, best = r["trials"], r["final"], r["best"]
        trials = f"{t['counted']}/{t['of']}" + (f" ({t['pruned']} pr)" if t["pruned"] else "") \
            + (" +running" if t["running"] else "")
        val = f"{best['value']:.3f}" if best else "-"
        lr = f"{best['params']['lr']:.2e}" if best and "lr" in best["params"] else "-"
        hours = t["core_hours"] + f["core_hours"]
        lines.append(f"{r['cell']:34} {trials:>14} {val:>8} {lr:>9} {f['runs']:>3}/{f['of']:<3} {hours:>7.2f}  "
                     f"{_span(t)} | {_span(f)}")
    tot = p["total"]
    medians = ", ".join(f"{m} {v:.0f} s" for m, v in tot["median_run_s_by_method"].items())
    rough = (f"; {tot['runs_left_at_the_overall_median']} runs of methods with no run yet at the median of all, "
             f"{tot['median_run_s']:.0f} s" if tot["runs_left_at_the_overall_median"] else "")
    left = (f"at most {tot['runs_left_at_most']} runs ≈ {tot['core_hours_left_at_most']} core-hours left "
            f"(each cell at its method's median run: {medians}{rough})") if tot["median_run_s"] \
        else "no run finished yet"
    if tot["extra_seed_runs_possible"] and tot["median_run_s"]:
        left += (f"; the precision rule may add up to {tot['extra_seed_runs_possible']} runs ≈ "
                 f"{tot['extra_seed_core_hours_possible']} core-hours more")
    lines.append(f"{tot['cells_done']}/{tot['cells']} cells done; {tot['runs']} runs, {tot['core_hours']} "
                 f"core-hours spent; {left}")
    return lines


def _span(stage: dict[str, Any]) -> str:
    """'began → ended (busy hours)' of a stage's finished runs; '-' when none."""
    if not stage["began"]:
        return "-"
    a, b = datetime.fromisoformat(stage["began"]), datetime.fromisoformat(stage["ended"])
    return f"{a:%m-%d %H:%M}→{b:%m-%d %H:%M} ({stage['busy_hours']:.1f} h busy)"
