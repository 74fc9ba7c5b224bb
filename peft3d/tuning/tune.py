"""``bench tune``: an Optuna study per backbone × weights × dataset × method cell, the same trial budget for every
method, then the best configuration on the grid's seeds as ordinary runs (protocol.md "Equal budgets").

- Search space: the learning rate (log-uniform, the grid's lr ÷/× 10) and weight decay (log-uniform 1e-4-0.1),
  the same for every method, plus the method's own knobs (``MethodConfig.search_space``). Objective: the best
  validation accuracy of the run (the epoch selection of protocol.md); the test set is never looked at.
- A trial is an ordinary training run (a RunSpec with the trial's ``method_cfg``, ``lr`` and ``weight_decay``,
  at the grid's first seed) executed in its own worker process (:func:`peft3d.schedule.runner.run_specs`); its
  result JSON goes to ``results/tune/<study>/runs/``, never among the grid's runs.
- Pruning is live: every ``@progress`` line's validation accuracy is reported to the study
  (``MedianPruner``); a pruned trial's process is terminated at once.
- Equal budgets: every study of the grid gets exactly N counted trials. Counted = COMPLETE + PRUNED + FAIL (a
  failure, e.g. a diverging learning rate, spends the budget as it would for a human tuner); trials cut short by
  an interruption (Ctrl-C, kill) are marked FAIL with ``peft3d.interrupted`` and are not counted — their
  parameters are queued again, so the resumed study sees the same budget. N, the counting rule, the space, the
  sampler and the pruner are recorded in each study's user attributes, in ``results/tune/<grid>.json`` and in
  the ``tuning`` block of every tuned result.
- The tuned runs differ from the grid's only by ``method_cfg`` and ``budget``, so they get their own run ids in
  ``results/runs/``; their table is ``results/tables/<grid>.tuned.md`` (``bench table --tuned``).
- MLflow (experiment ``peft3d/<grid>/tune``): a parent run per study, a nested run per trial, created with the
  client and explicit run ids (trials run in other processes, so no fluent active-run state). Runs carry their
  owner (host:pid:start time); on start, RUNNING runs and trials whose owner process is gone are marked
  KILLED / FAIL, so an interrupted tune never leaves RUNNING runs behind.
"""
from __future__ import annotations

import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from peft3d.core.digest import text_sha256
from peft3d.core.errors import ConfigError
from peft3d.core.result import RunResult, atomic_write_text, read_result, write_result
from peft3d.core.spec import RunSpec
from peft3d.tuning.sharing import (
    Heartbeat,
    StaleRetry,
    give_back,
    is_interrupted,
    open_storage,
    place_of,
    quiet,
    recover,
)
from peft3d.tuning.tracking import TuneTracker, owner_alive, owner_token

__all__ = ["Tuner", "TuneOptions", "TuneTracker", "cells_of", "counts", "owner_alive", "owner_token", "recover",
           "read_manifest", "suggest", "tuned_specs"]

WD_RANGE = (1e-4, 0.1)
LR_FACTOR = 10.0
COUNTING_RULE = ("counted = COMPLETE + PRUNED + FAIL with a recorded error; trials interrupted by Ctrl-C, a kill "
                 "or a stale heartbeat are FAIL without one and not counted (their parameters are queued again)")
POLL_S = 2.0  # how often a worker whose study is full of other workers' running trials looks again
Echo = Callable[[str], None]


# ------------------------------------------------------------------------------------------- cells and space

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
        ident = b.identity()
        ident.pop("seed")
        digest = text_sha256(json.dumps(ident, sort_keys=True))[:8]  # (spaced JSON: kept, names existing studies)
        preset = f"/{b.preset}" if b.preset else ""
        return f"{self.grid}/{b.backbone}[{b.weights}]/{b.dataset}:{b.variant}/{b.method}{preset}/{digest}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.study_name)


def cells_of(specs: list[RunSpec], grid: str) -> list[Cell]:
    groups: dict[str, list[RunSpec]] = {}
    for s in specs:
        ident = s.identity()
        ident.pop("seed")
        groups.setdefault(json.dumps(ident, sort_keys=True), []).append(s)
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


# ------------------------------------------------------------------------------------------- Optuna

def storage_url(root: Path, override: str | None = None) -> str:
    return override or f"sqlite:///{root / 'optuna.db'}"


def redact(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", url)


def counts(study: Any) -> dict[str, int]:
    """Trial counts by state; ``counted`` is what the equal budget counts (see COUNTING_RULE)."""
    from optuna.trial import TrialState

    c = {"complete": 0, "pruned": 0, "failed": 0, "interrupted": 0, "running": 0, "waiting": 0}
    attrs = study.user_attrs
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.FAIL:
            c["interrupted" if is_interrupted(t, attrs) else "failed"] += 1
        else:
            c[{TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.RUNNING: "running",
               TrialState.WAITING: "waiting"}[t.state]] += 1
    c["counted"] = c["complete"] + c["pruned"] + c["failed"]
    return c


def make_pruner(kind: str, epochs: int) -> tuple[Any, str]:
    import optuna

    if kind == "none":
        return optuna.pruners.NopPruner(), "none"
    if kind != "median":
        raise ConfigError(f"--pruner must be 'median' or 'none', got {kind!r}")
    warm = max(1, epochs // 4)
    return (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warm),
            f"MedianPruner(n_startup_trials=2, n_warmup_steps={warm}) on the per-epoch validation accuracy; "
            "live: the trial's process is terminated when pruned")


def open_study(cell: Cell, storage: Any, pruner_kind: str) -> Any:
    import optuna

    study = optuna.create_study(storage=storage, study_name=cell.study_name, direction="maximize",
                                load_if_exists=True)
    # Seeded by the study's history, so a resumed study does not replay the first samples of its first session,
    # and by the worker (host/pid), so workers started together on one study do not draw the same samples.
    seed = int(text_sha256(f"{cell.study_name}#{len(study.trials)}#{owner_token()}")[:8], 16)
    study.sampler = optuna.samplers.TPESampler(seed=seed)
    study.pruner, _ = make_pruner(pruner_kind, cell.base.budget.epochs)
    return study


def best_spec(study: Any) -> tuple[RunSpec | None, Any]:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return None, None
    best = max(done, key=lambda t: (t.value, -t.number))  # earliest trial on ties
    return RunSpec.from_dict(best.user_attrs["peft3d.core.spec"]), best


# ------------------------------------------------------------------------------------------- one trial

Report = Callable[[dict[str, Any]], bool]  # epoch event -> True to stop the run (pruned)
Execute = Callable[[RunSpec, Path, Report], tuple[RunResult | None, bool]]


def run_trial_process(spec: RunSpec, root: Path, report: Report) -> tuple[RunResult | None, bool]:
    """Run ``spec`` in a worker process (the same path as ``bench run``); terminate it when ``report`` says so.
    Returns (result, stopped)."""
    from peft3d.schedule.runner import run_specs

    stopped = threading.Event()
    seen: set[int] = set()

    def on_event(job: Any) -> None:
        # Runs on the thread that drains the worker's stdout: it must never raise, or the pipe would fill and
        # block the worker. A failed report (e.g. a locked database) only costs this epoch's pruning check.
        ev = job.last
        if not ev or ev.get("epoch") in seen or stopped.is_set():
            return
        seen.add(ev["epoch"])
        try:
            prune = report(ev)
        except Exception as e:  # noqa: BLE001
            print(f"warning: could not report epoch {ev.get('epoch')} to the study: {e}", file=sys.stderr)
            return
        if prune:
            stopped.set()
            if job.proc is not None and job.proc.poll() is None:
                job.proc.terminate()

    done = run_specs([spec], root, jobs=1, on_event=on_event)
    return (done[0] if done else None), stopped.is_set()


@dataclass
class Outcome:
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None
    curve: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def run_one(trial: Any, spec: RunSpec, trial_root: Path, execute: Execute) -> Outcome:
    curve: list[dict[str, Any]] = []
    lock = threading.Lock()

    def report(ev: dict[str, Any]) -> bool:
        with lock:
            curve.append(dict(ev))
            trial.report(float(ev["val_acc"]), int(ev["epoch"]))
            return bool(trial.should_prune())

    prior = read_result(trial_root, spec.run_id)
    if prior and prior.ok and prior.metrics:  # the same configuration already ran (e.g. a retried trial)
        c = prior.metrics.curves
        for ep, v in zip(c["epoch"], c["val_acc"], strict=True):
            report({"epoch": ep, "val_acc": v})
        result, stopped = prior, False
    else:
        result, stopped = execute(spec, trial_root, report)
    if result and result.ok and result.metrics:  # finished, even if a prune decision raced with its last epoch
        return Outcome("COMPLETE", result.metrics.val_acc, curve)
    if stopped:
        last = curve[-1]["epoch"] if curve else 0
        write_result(trial_root, RunResult.failure(spec.to_dict(), spec.run_id, f"pruned after epoch {last}",
                                                   status="pruned", curve=curve))
        return Outcome("PRUNED", None, curve)
    return Outcome("FAIL", None, curve, str((result and result.error) or "no result"))


# ------------------------------------------------------------------------------------------- the grid

@dataclass
class TuneOptions:
    n_trials: int
    storage: str
    pruner: str = "median"
    jobs: int = 1  # final runs in parallel
    mlflow_uri: str | None = None  # None: no MLflow
    heartbeat_s: int = 60  # Optuna heartbeat interval; a trial is stale after GRACE_FACTOR missed beats


def study_attrs(cell: Cell, opts: TuneOptions) -> dict[str, Any]:
    _, pruner = make_pruner(opts.pruner, cell.base.budget.epochs)
    return {"peft3d.n_trials": opts.n_trials, "peft3d.counting": COUNTING_RULE,
            "peft3d.objective": "best validation accuracy over epochs (test never seen)",
            "peft3d.space": space_description(cell.base), "peft3d.sampler": "TPESampler (seeded per session)",
            "peft3d.pruner": pruner, "peft3d.tuning_seed": cell.base.seed, "peft3d.grid": cell.grid}


class Tuner:
    def __init__(self, grid: str, specs: list[RunSpec], root: Path, opts: TuneOptions,
                 execute: Execute = run_trial_process, echo: Echo = print) -> None:
        if opts.n_trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {opts.n_trials}")
        self.grid, self.root, self.opts, self.execute, self.echo = grid, root, opts, execute, echo
        self.cells = cells_of(specs, grid)
        self.retry = StaleRetry()
        self.storage = open_storage(opts.storage, opts.heartbeat_s, self.retry)
        self.tracker = TuneTracker(opts.mlflow_uri, f"peft3d/{grid}/tune") if opts.mlflow_uri else None
        self.studies: dict[str, Any] = {}

    def prepare(self) -> None:
        """Reap dead owners' MLflow runs and trials, then check that every study can get exactly N trials."""
        if self.tracker:
            n = self.tracker.reap()
            if n:
                self.echo(f"marked {n} MLflow run(s) of an interrupted tune as KILLED")
        self.recover_orphans()
        too_many = []
        for cell in self.cells:
            study = open_study(cell, self.storage, self.opts.pruner)
            back = recover(study, self.retry)
            if back:
                self.echo(f"{cell.study_name}: trial(s) {back} were interrupted: marked FAIL (not counted), "
                          "queued again")
            c = counts(study)
            if c["counted"] > self.opts.n_trials:
                too_many.append(f"{cell.study_name} ({c['counted']})")
            self.studies[cell.study_name] = study
        if too_many:
            raise ConfigError(f"equal budgets: --trials {self.opts.n_trials} is below the trials some studies already "
                              f"have: {', '.join(too_many)}; use at least that many or another --storage")
        for cell in self.cells:
            for k, v in study_attrs(cell, self.opts).items():
                self.studies[cell.study_name].set_user_attr(k, v)

    def recover_orphans(self) -> None:
        """Stale trials of this grid's studies that are no longer in the grid (e.g. a method's config changed,
        so its cells got new studies): FAIL, so no study of this grid shows a RUNNING trial of a dead process."""
        import optuna

        current = {c.study_name for c in self.cells}
        for summary in optuna.get_all_study_summaries(self.storage, include_best_trial=False):
            name = summary.study_name
            if name.startswith(f"{self.grid}/") and name not in current:
                back = recover(optuna.load_study(study_name=name, storage=self.storage), self.retry)
                if back:
                    self.echo(f"{name} (no longer in the grid): trial(s) {back} were interrupted: marked FAIL")

    def tune_cell(self, cell: Cell, index: int) -> None:
        """Run trials of this cell's study until N are counted — by this worker or by others sharing the study."""
        study, n = self.studies[cell.study_name], self.opts.n_trials
        if counts(study)["counted"] >= n:
            return
        parent = self.tracker.study_run(cell.study_name, study.user_attrs) if self.tracker else None
        trial = mrid = None
        waiting = False
        try:
            while True:
                self._recover(cell, study)
                c = counts(study)
                if c["counted"] >= n:
                    break
                if c["counted"] + c["running"] >= n:  # other workers' trials may still fill the budget
                    if not waiting:
                        self.echo(f"[{index}/{len(self.cells)}] {cell.study_name}: waiting for {c['running']} "
                                  "running trial(s) of other workers")
                    waiting = True
                    time.sleep(POLL_S)
                    continue
                waiting = False
                with quiet():
                    trial = study.ask()
                trial.set_user_attr("peft3d.owner", owner_token())  # first: a trial with an owner is reapable
                with Heartbeat(self.storage, trial, self.opts.heartbeat_s):
                    spec = suggest(trial, cell.base)
                    place, frozen = place_of(study, trial.number)
                    if place > n:  # another worker took the last place between our count and our ask
                        give_back(study, trial, frozen)
                        trial = None
                        continue
                    mrid = self._start_trial(parent, cell, trial, spec)
                    out = run_one(trial, spec, self.root / "tune" / cell.slug, self.execute)
                    told = self._tell(study, trial, out)
                trial = None
                if self.tracker:
                    self.tracker.end_trial(mrid, out.state if told else "INTERRUPTED", out.value, out.curve)
                mrid = None
                if told:
                    self._echo_trial(cell, index, study, out)
        except BaseException:
            self._interrupted(study, trial, mrid, parent)
            raise
        if self.tracker:
            self.tracker.end_study(parent, "FINISHED", counts(study))

    def _recover(self, cell: Cell, study: Any) -> None:
        back = recover(study, self.retry)
        if back:
            self.echo(f"{cell.study_name}: trial(s) {back} of a gone worker were interrupted: marked FAIL "
                      "(not counted), retried")

    def _start_trial(self, parent: str | None, cell: Cell, trial: Any, spec: RunSpec) -> str | None:
        trial.set_user_attr("peft3d.interrupted", False)  # a retry of an interrupted trial starts afresh
        trial.set_user_attr("peft3d.run_id", spec.run_id)
        trial.set_user_attr("peft3d.core.spec", spec.to_dict())
        if not self.tracker:
            return None
        mrid = self.tracker.trial_run(parent, cell.study_name, trial.number, spec, trial.params)
        trial.set_user_attr("peft3d.mlflow_run_id", mrid)
        return mrid

    def _tell(self, study: Any, trial: Any, out: Outcome) -> bool:
        """Record the outcome; False when another worker had declared the trial stale meanwhile (then its
        retry is what counts)."""
        import optuna
        from optuna.trial import TrialState

        try:
            if out.state == "COMPLETE":
                study.tell(trial, out.value)
            elif out.state == "PRUNED":
                study.tell(trial, state=TrialState.PRUNED)
            else:
                trial.set_user_attr("peft3d.error", (out.error or "")[:2000])  # before FAIL: it is counted
                study.tell(trial, state=TrialState.FAIL)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError) as e:
            self.echo(f"trial {trial.number} was declared stale by another worker ({e}); its retry counts instead")
            return False
        return True

    def _interrupted(self, study: Any, trial: Any, mrid: str | None, parent: str | None) -> None:
        """Ctrl-C / SIGTERM / an error in the harness: the running trial is FAIL, interrupted, queued again."""
        import optuna
        from optuna.trial import TrialState

        if trial is not None:
            try:
                trial.set_user_attr("peft3d.interrupted", True)
                study.tell(trial, state=TrialState.FAIL)
                self.retry(study, next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number))
            except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                pass  # already finished (declared stale and retried by another worker)
        if self.tracker:
            if mrid:
                self.tracker.end_trial(mrid, "INTERRUPTED", None, [])
            if parent:
                self.tracker.end_study(parent, "KILLED", counts(study))

    def _echo_trial(self, cell: Cell, index: int, study: Any, out: Outcome) -> None:
        c = counts(study)
        what = f"val {100 * out.value:.1f}" if out.value is not None else (
            f"pruned at epoch {out.curve[-1]['epoch']}" if out.state == "PRUNED" and out.curve else out.state.lower())
        if out.state == "FAIL":
            what += f": {(out.error or '')[:100]}"
        self.echo(f"[{index}/{len(self.cells)}] {cell.base.backbone}[{cell.base.weights}]/{cell.base.method}/"
                  f"{cell.base.dataset}:{cell.base.variant} trial {c['counted']}/{self.opts.n_trials}: {what}")

    def run(self, run_final: Callable[[list[RunSpec], dict[str, dict[str, Any]]], None] | None = None) -> dict:
        """Tune every cell to N trials, then run the best configurations on the grid's seeds."""
        from peft3d.schedule.runner import pending

        self.prepare()
        for i, cell in enumerate(self.cells, 1):
            self.tune_cell(cell, i)
        specs, blocks, missing = self.final_specs()
        for m in missing:
            self.echo(f"{m}: no complete trial (all pruned or failed): no tuned runs for this cell")
        self.write_manifest(specs, blocks, missing)
        todo = pending(specs, self.root)
        self.echo(f"tuned runs: {len(specs)}, {len(specs) - len(todo)} already done, {len(todo)} to run")
        if todo:
            (run_final or self.run_final)(todo, blocks)
        for s in specs:
            self.annotate(s.run_id, blocks[s.run_id])
        self.write_manifest(specs, blocks, missing)
        return read_manifest(self.root, self.grid)

    def run_final(self, todo: list[RunSpec], blocks: dict[str, dict[str, Any]]) -> None:
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

    # ------------------------------------------------------------------ the tuned runs

    def summary(self, cell: Cell) -> dict[str, Any]:
        study = self.studies[cell.study_name]
        _, best = best_spec(study)
        return {"study": cell.study_name, "storage": redact(self.opts.storage), **counts(study),
                "n_trials": self.opts.n_trials, "counting": COUNTING_RULE,
                "objective": study.user_attrs.get("peft3d.objective"), "space": study.user_attrs.get("peft3d.space"),
                "sampler": study.user_attrs.get("peft3d.sampler"), "pruner": study.user_attrs.get("peft3d.pruner"),
                "tuning_seed": cell.base.seed, "best_trial": best.number if best else None,
                "best_value": best.value if best else None, "best_params": dict(best.params) if best else None}

    def final_specs(self) -> tuple[list[RunSpec], dict[str, dict[str, Any]], list[str]]:
        """The grid's specs with each cell's best configuration; the tuning block per run_id; cells without one."""
        specs, blocks, missing = [], {}, []
        for cell in self.cells:
            best, _ = best_spec(self.studies[cell.study_name])
            if best is None:
                missing.append(cell.study_name)
                continue
            block = self.summary(cell)
            for s in cell.specs:
                t = tuned_spec(s, best).replace(grid=f"{self.grid}.tuned")
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

    def write_manifest(self, specs: list[RunSpec], blocks: dict[str, dict[str, Any]], missing: list[str]) -> Path:
        studies = {c.study_name: self.summary(c) for c in self.cells}
        equal = len({v["counted"] for v in studies.values()}) == 1 and all(
            v["counted"] == self.opts.n_trials for v in studies.values())
        manifest = {"grid": self.grid, "n_trials": self.opts.n_trials, "counting": COUNTING_RULE,
                    "equal_budget": equal, "storage": redact(self.opts.storage), "studies": studies,
                    "cells_without_a_complete_trial": missing, "runs": [s.to_dict() for s in specs]}
        path = manifest_path(self.root, self.grid)
        atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False))
        return path


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




def budget_line(manifest: dict[str, Any]) -> str:
    if manifest["equal_budget"]:
        return (f"Tuning: {manifest['n_trials']} Optuna trials per cell in all {len(manifest['studies'])} studies "
                f"(equal budget; {manifest['counting']}); the best configuration of each cell (validation metric) "
                "was run on the grid's seeds.")
    return "WARNING: the studies have different trial counts (see the manifest): not an equal-budget comparison."


def write_tuned_tables(grid: str, root: Path, versus: str | None = None) -> tuple[Path, str, int]:
    """``<grid>.tuned`` tables with the tuning budget under them; returns (md path, markdown, runs not succeeded)."""
    from peft3d.reporting.tables import runs_frame, write_tables

    manifest = read_manifest(root, grid)
    df = runs_frame([RunSpec.from_dict(d) for d in manifest["runs"]], root)
    md_path, _, md = write_tables(f"{grid}.tuned", df, root, versus)
    md += "\n" + budget_line(manifest) + "\n"
    atomic_write_text(md_path, md)
    return md_path, md, int((df["status"] != "success").sum())
