"""The final runs of ``bench tune`` and its manifest: each cell's best configuration (validation metric) run on
the grid's seeds as ordinary runs, and ``results/tune/<grid>.json``, which records what every study spent and
found.

The tuned runs differ from the grid's only by ``method_cfg`` and ``budget``, so they get their own run ids in
``results/runs/``; each carries a ``tuning`` block (the study's budget, counting rule, space, sampler, pruner
and best trial). Their table is ``results/tables/<grid>.tuned.md`` (``bench table --tuned``), with the budget
stated under it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft3d.core.errors import ConfigError
from peft3d.core.result import RunResult, atomic_write_text, read_result, write_result
from peft3d.core.spec import RunSpec
from peft3d.tuning.budget import COUNTING_RULE, Echo, TuneOptions, counts, equal_budget, redact
from peft3d.tuning.cells import Cell, tuned_spec
from peft3d.tuning.precision import extra_runs

Blocks = dict[str, dict[str, Any]]  # run_id -> the tuning block of its result


# Objectives closer than this are a tie. An objective is a mean of fold accuracies (multiples of 1/n for a few
# dozen to a few hundred models), so two trials that are equal on paper can differ in the last bit when their
# folds sum in another order (seen: 0.818068068068068 against 0.8180680680680682). A real difference is at least
# 1 / (folds × n_a × n_b) for validation folds of n_a and n_b models: above 1e-9 while folds hold under ~10,000.
TIE_TOLERANCE = 1e-9


def best_trial(trials: list[Any]) -> Any:
    """The earliest of the trials whose objective ties the highest one (within ``TIE_TOLERANCE``)."""
    top = max(t.value for t in trials)
    return min((t for t in trials if t.value >= top - TIE_TOLERANCE), key=lambda t: t.number)


def best_spec(study: Any) -> tuple[RunSpec | None, Any]:
    """The best COMPLETE trial's RunSpec and the trial (earliest on ties); (None, None) when there is none."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return None, None
    best = best_trial(done)
    return RunSpec.from_dict(best.user_attrs["peft3d.core.spec"]), best


@dataclass
class FinalRuns:
    """The tuned runs of a grid whose studies are open: which they are, running them, the manifest."""

    grid: str
    root: Path
    opts: TuneOptions
    cells: list[Cell]
    studies: dict[str, Any]  # study name -> Optuna study
    echo: Echo

    def summary(self, cell: Cell) -> dict[str, Any]:
        study = self.studies[cell.study_name]
        _, best = best_spec(study)
        return {"study": cell.study_name, "storage": redact(self.opts.storage), **counts(study),
                "n_trials": self.opts.n_trials, "counting": COUNTING_RULE,
                "objective": study.user_attrs.get("peft3d.objective"), "space": study.user_attrs.get("peft3d.space"),
                "sampler": study.user_attrs.get("peft3d.sampler"), "pruner": study.user_attrs.get("peft3d.pruner"),
                "tuning_seed": cell.base.seed, "best_trial": best.number if best else None,
                "best_value": best.value if best else None, "best_params": dict(best.params) if best else None}

    def specs(self, cells: list[Cell] | None = None) -> tuple[list[RunSpec], Blocks, list[str]]:
        """The grid's specs with each cell's best configuration (of ``cells``, default all); the tuning block
        per run_id; the cells without one."""
        specs, blocks, missing = [], {}, []
        for cell in self.cells if cells is None else cells:
            best, _ = best_spec(self.studies[cell.study_name])
            if best is None:
                missing.append(cell.study_name)
                continue
            block = self.summary(cell)
            tuned = [tuned_spec(s, best).replace(grid=f"{self.grid}.tuned") for s in cell.specs]
            extra, _ = extra_runs(tuned, self.opts.plan.precision, self.root)  # seeds until precise, if asked
            for t in tuned + extra:
                specs.append(t)
                blocks[t.run_id] = block
        return specs, blocks, missing

    def annotate(self, run_id: str, block: dict[str, Any]) -> RunResult | None:
        """Add the ``tuning`` block to a finished tuned result (idempotent; atomic rewrite)."""
        r = read_result(self.root, run_id)
        if r is None or r.sections.get("tuning") == block:
            return r
        r = r.with_sections(tuning=block)
        write_result(self.root, r)
        return r

    def run(self, todo: list[RunSpec], blocks: Blocks) -> None:
        """Run the tuned specs in worker processes (``opts.jobs`` at once), annotated and mirrored as they end."""
        from peft3d.schedule.runner import run_specs

        mirror = None
        if self.opts.mlflow_uri:
            from peft3d.reporting.mirror import Mirror

            mirror = Mirror(self.opts.mlflow_uri, experiment=f"peft3d/{self.grid}.tuned")

        def on_done(job: Any, result: RunResult | None) -> None:
            ok = bool(result and result.ok and result.metrics)
            if ok:
                result = self.annotate(job.spec.run_id, blocks[job.spec.run_id]) or result
            info = (f"test {100 * result.metrics.test_acc:.1f}" if ok and result and result.metrics
                    else f"failed: {result.error if result else 'no result'}")
            self.echo(f"{'✓' if ok else '✗'} {job.spec.label} (tuned)  {info}")
            if mirror is not None and result:
                try:
                    mirror.log(result)
                except Exception as e:  # the mirror is secondary: never lose a run over it
                    self.echo(f"MLflow mirror failed for {job.spec.run_id}: {e}")

        run_specs(todo, self.root, self.opts.jobs, on_done=on_done)

    def write_manifest(self, specs: list[RunSpec], missing: list[str]) -> Path:
        studies = {c.study_name: {**self.summary(c), "cell": cell_record(c),
                                  "trials": trial_records(self.studies[c.study_name])} for c in self.cells}
        manifest = {"grid": self.grid, "n_trials": self.opts.n_trials, "counting": COUNTING_RULE,
                    "equal_budget": equal_budget([v["counted"] for v in studies.values()], self.opts.n_trials),
                    "storage": redact(self.opts.storage), "studies": studies,
                    "cells_without_a_complete_trial": missing, "runs": [s.to_dict() for s in specs]}
        rule = self.opts.plan.precision
        if rule is not None:
            manifest["precision"] = rule.describe()
        path = manifest_path(self.root, self.grid)
        atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False))
        return path


def cell_record(cell: Cell) -> dict[str, Any]:
    b = cell.base
    return {"backbone": b.backbone, "weights": b.weights, "method": b.method, "dataset": b.dataset,
            "variants": list(cell.objective_variants) or [b.variant]}


def trial_records(study: Any) -> list[dict[str, Any]]:
    """Every trial of a study: its number, state, parameters, objective (None unless COMPLETE) and the last
    intermediate value it reported (a pruned trial's running mean) — what the learning-rate sensitivity plot of
    the report draws."""
    out = []
    for t in study.get_trials(deepcopy=False):
        last = max(t.intermediate_values) if t.intermediate_values else None
        out.append({"number": t.number, "state": t.state.name, "params": dict(t.params), "value": t.value,
                    "last_step": last, "last_value": t.intermediate_values.get(last) if last is not None else None})
    return out


def manifest_path(root: Path, grid: str) -> Path:
    return root / "tune" / f"{grid}.json"


def read_manifest(root: Path, grid: str) -> dict[str, Any]:
    path = manifest_path(root, grid)
    if not path.exists():
        raise ConfigError(f"no tuned runs for grid {grid!r} in {root}: run 'bench tune --grid {grid}' first")
    return json.loads(path.read_text())


def tuned_specs(grid: str, root: Path) -> list[RunSpec]:
    """The tuned runs of a grid, as recorded by the last ``bench tune`` (for ``bench table --tuned``)."""
    return [RunSpec.from_dict(d) for d in read_manifest(root, grid)["runs"]]


def budget_line(manifest: dict[str, Any], reported: set[str] | None = None) -> str:
    """The line under a tuned table stating its budget. ``reported``: the studies whose tuned runs have results
    (None: all); while a study is still tuning, its cell shows no tuned run, so the budget is equal when every
    study with results counted N trials."""
    studies, n = manifest["studies"], manifest["n_trials"]
    extra = f" Seeds until precise: {manifest['precision']}." if manifest.get("precision") else ""
    tail = (f"(equal budget; {manifest['counting']}); the best configuration of each cell (validation metric) "
            f"was run on the grid's seeds.{extra}")
    if manifest["equal_budget"]:
        return f"Tuning: {n} Optuna trials per cell in all {len(studies)} studies {tail}"
    shown = [name for name in studies if reported is None or name in reported]
    if reported is not None and shown and all(studies[name]["counted"] == n for name in shown):
        return (f"Tuning: {n} Optuna trials per cell in every study with tuned runs so far ({len(shown)} of "
                f"{len(studies)}) {tail} The other {len(studies) - len(shown)} are still tuning: their cells show "
                "no tuned run yet.")
    return "WARNING: the studies have different trial counts (see the manifest): not an equal-budget comparison."


def reported_studies(specs: list[RunSpec], root: Path) -> set[str]:
    """The studies (named in each result's ``tuning`` block) behind the tuned runs that have a result."""
    out = set()
    for s in specs:
        r = read_result(root, s.run_id)
        study = (r.sections.get("tuning") or {}).get("study") if r is not None else None
        if study:
            out.add(study)
    return out


def tuned_table(grid: str, root: Path) -> tuple[list[RunSpec], str]:
    """What the ``<grid>.tuned`` tables show: the tuned runs of the last ``bench tune`` and the line stating its
    budget, to be written under them."""
    manifest = read_manifest(root, grid)
    specs = [RunSpec.from_dict(d) for d in manifest["runs"]]
    return specs, budget_line(manifest, reported_studies(specs, root))
