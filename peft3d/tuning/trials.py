"""Trial execution of ``bench tune``: ask a study for trials until its budget is counted, run each as an ordinary
training run, prune it live, and tell the study how it ended.

- A trial is an ordinary training run (a RunSpec with the trial's ``method_cfg``, ``lr`` and ``weight_decay``,
  at the grid's first seed) executed in its own worker process (:func:`peft3d.schedule.runner.run_specs`); its
  result JSON goes to ``results/tune/<study>/runs/``, never among the grid's runs.
- Pruning is live: every ``@progress`` line's validation accuracy is reported to the study
  (``MedianPruner``); a pruned trial's process is terminated at once.
- Several workers may share a study: a trial is kept only if it holds one of the budget's N places
  (:func:`peft3d.tuning.sharing.place_of`); an interrupted trial is marked FAIL, not counted, and queued again.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from peft3d.core.owners import owner_token
from peft3d.core.result import RunResult, read_result, write_result
from peft3d.core.spec import RunSpec
from peft3d.tuning.budget import Echo, counts
from peft3d.tuning.cells import Cell, suggest
from peft3d.tuning.sharing import Heartbeat, StaleRetry, give_back, place_of, quiet, recover
from peft3d.tuning.tracking import TuneTracker

POLL_S = 2.0  # how often a worker whose study is full of other workers' running trials looks again
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


def _execute_or_reuse(spec: RunSpec, trial_root: Path, execute: Execute, report: Report
                      ) -> tuple[RunResult | None, bool]:
    """Run ``spec`` unless the same configuration already ran (a retried trial, or a study rebuilt from the
    committed trial results): then its stored curve is replayed to ``report``. A trial that ran before trials
    skipped their test split has the same training under the id with test evaluation; it is reused too."""
    prior = read_result(trial_root, spec.run_id) or read_result(trial_root, spec.replace(evaluate_test=True).run_id)
    if prior and prior.ok and prior.metrics:
        c = prior.metrics.curves
        for ep, v in zip(c["epoch"], c["val_acc"], strict=True):
            report({"epoch": ep, "val_acc": v})
        return prior, False
    return execute(spec, trial_root, report)


def run_trial(trial: Any, specs: list[RunSpec], trial_root: Path, execute: Execute) -> Outcome:
    """One trial: a single run, pruned live epoch by epoch, or (a pooled cell) one run per objective variant."""
    return run_one(trial, specs[0], trial_root, execute) if len(specs) == 1 else \
        run_pooled(trial, specs, trial_root, execute)


def run_pooled(trial: Any, specs: list[RunSpec], trial_root: Path, execute: Execute) -> Outcome:
    """The runs of a pooled trial in order; after each, the running mean of their validation accuracy (at each
    run's selected epoch) is reported as step i, and the trial is pruned there if the pruner says so."""
    values: list[float] = []
    curve: list[dict[str, Any]] = []
    for i, spec in enumerate(specs, 1):
        result, _ = _execute_or_reuse(spec, trial_root, execute, lambda ev: False)
        if not (result and result.ok and result.metrics):
            return Outcome("FAIL", None, curve, f"{spec.variant}: {(result and result.error) or 'no result'}")
        values.append(result.metrics.val_acc)
        mean = sum(values) / len(values)
        curve.append({"epoch": i, "val_acc": mean, "variant": spec.variant, "run_val_acc": values[-1]})
        trial.report(mean, i)
        if i < len(specs) and trial.should_prune():
            return Outcome("PRUNED", None, curve)
    return Outcome("COMPLETE", sum(values) / len(values), curve)


def run_one(trial: Any, spec: RunSpec, trial_root: Path, execute: Execute) -> Outcome:
    curve: list[dict[str, Any]] = []
    lock = threading.Lock()

    def report(ev: dict[str, Any]) -> bool:
        with lock:
            curve.append(dict(ev))
            trial.report(float(ev["val_acc"]), int(ev["epoch"]))
            return bool(trial.should_prune())

    result, stopped = _execute_or_reuse(spec, trial_root, execute, report)
    if result and result.ok and result.metrics:  # finished, even if a prune decision raced with its last epoch
        return Outcome("COMPLETE", result.metrics.val_acc, curve)
    if stopped:
        last = curve[-1]["epoch"] if curve else 0
        write_result(trial_root, RunResult.failure(spec.to_dict(), spec.run_id, f"pruned after epoch {last}",
                                                   status="pruned", curve=curve))
        return Outcome("PRUNED", None, curve)
    return Outcome("FAIL", None, curve, str((result and result.error) or "no result"))


@dataclass
class TrialLoop:
    """Runs one cell's trials until its study counts N, shared with any other worker on the same storage."""

    storage: Any
    retry: StaleRetry
    tracker: TuneTracker | None
    n_trials: int
    heartbeat_s: int
    root: Path
    execute: Execute
    echo: Echo
    n_cells: int  # for the "[i/n]" of the log lines
    shared_space: bool = False  # lr and weight decay only (TuningPlan.space == "shared")

    def tune_cell(self, cell: Cell, study: Any, index: int, wait: bool = True) -> bool:
        """Run trials of this cell's study until N are counted — by this worker or by others sharing the study.
        When only other workers' running trials are left, wait for them (``wait``), or else return False at
        once: the caller tunes another cell meanwhile instead of idling for a whole trial. True: N counted."""
        n = self.n_trials
        if counts(study)["counted"] >= n:
            return True
        parent = self.tracker.study_run(cell.study_name, study.user_attrs) if self.tracker else None
        trial = mrid = None
        waiting = full = False
        try:
            while True:
                self._recover(cell, study)
                c = counts(study)
                if c["counted"] >= n:
                    full = True
                    break
                if c["counted"] + c["running"] >= n:  # other workers' trials may still fill the budget
                    if not wait:
                        self.echo(f"[{index}/{self.n_cells}] {cell.study_name}: its last {c['running']} trial(s) "
                                  "run in other workers; tuning the next cell meanwhile")
                        break
                    if not waiting:
                        self.echo(f"[{index}/{self.n_cells}] {cell.study_name}: waiting for {c['running']} "
                                  "running trial(s) of other workers")
                    waiting = True
                    time.sleep(POLL_S)
                    continue
                waiting = False
                with quiet():
                    trial = study.ask()
                trial.set_user_attr("peft3d.owner", owner_token())  # first: a trial with an owner is reapable
                with Heartbeat(self.storage, trial, self.heartbeat_s):
                    spec = suggest(trial, cell.base, self.shared_space)
                    place, frozen = place_of(study, trial.number)
                    if place > n:  # another worker took the last place between our count and our ask
                        give_back(study, trial, frozen)
                        trial = None
                        continue
                    mrid = self._start_trial(parent, cell, trial, spec)
                    out = run_trial(trial, cell.trial_specs(spec), self.root / "tune" / cell.slug, self.execute)
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
        return full

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
        where = (f"after {out.curve[-1]['variant']}" if out.curve and "variant" in out.curve[-1]
                 else f"at epoch {out.curve[-1]['epoch']}" if out.curve else "")
        what = f"val {100 * out.value:.1f}" if out.value is not None else (
            f"pruned {where}" if out.state == "PRUNED" else out.state.lower())
        if out.state == "FAIL":
            what += f": {(out.error or '')[:100]}"
        self.echo(f"[{index}/{self.n_cells}] {cell.base.backbone}[{cell.base.weights}]/{cell.base.method}/"
                  f"{cell.base.dataset}:{cell.base.variant} trial {c['counted']}/{self.n_trials}: {what}")
