"""Equal-budget accounting of ``bench tune``: every study of a grid gets exactly N counted trials.

Counted = COMPLETE + PRUNED + FAIL with a recorded error (a failure, e.g. a diverging learning rate, spends the
budget as it would for a human tuner); trials cut short by an interruption (Ctrl-C, kill, a stale heartbeat) are
FAIL without one and are not counted — their parameters are queued again, so the resumed study sees the same
budget. N, the counting rule, the space, the sampler and the pruner are written into each study's user
attributes when it is opened (:func:`open_studies`), and a budget can grow for every study but never shrink.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from peft3d.core.digest import text_sha256
from peft3d.core.errors import ConfigError
from peft3d.core.owners import owner_token
from peft3d.grids.plan import TuningPlan
from peft3d.tuning.cells import Cell, space_description
from peft3d.tuning.sharing import StaleRetry, is_interrupted, recover

COUNTING_RULE = ("counted = COMPLETE + PRUNED + FAIL with a recorded error; trials interrupted by Ctrl-C, a kill "
                 "or a stale heartbeat are FAIL without one and not counted (their parameters are queued again)")
Echo = Callable[[str], None]


@dataclass
class TuneOptions:
    n_trials: int
    storage: str
    pruner: str = "median"
    jobs: int = 1  # final runs in parallel
    mlflow_uri: str | None = None  # None: no MLflow
    heartbeat_s: int = 60  # Optuna heartbeat interval; a trial is stale after GRACE_FACTOR missed beats
    plan: TuningPlan = TuningPlan()  # the grid's tuning block: sampler, space, pooled objective
    finish_cells: bool = False  # run each cell's final runs as soon as its study is full (results land early)


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


def make_pruner(kind: str, epochs: int, pooled: bool = False) -> tuple[Any, str]:
    """The pruner and its description. ``pooled``: a trial is several runs (one per objective variant) and reports
    the running mean of their validation accuracy after each run, so it is pruned between runs, once 3 trials
    have set the reference (runs of different variants are not comparable epoch by epoch)."""
    import optuna

    if kind == "none":
        return optuna.pruners.NopPruner(), "none"
    if kind != "median":
        raise ConfigError(f"--pruner must be 'median' or 'none', got {kind!r}")
    if pooled:
        # Bottom quarter, not below-median: one fold's validation split is small (a few dozen models), and a
        # median rule would stop half of the trials on it; a quarter stops the clearly bad (e.g. diverging) ones.
        return (optuna.pruners.PercentilePruner(75.0, n_startup_trials=3, n_warmup_steps=0),  # keeps the top 75%
                "PercentilePruner(75, n_startup_trials=3) on the running mean validation accuracy after each "
                "objective variant's run: a trial in the bottom quarter there runs no further variant")
    warm = max(1, epochs // 4)
    return (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warm),
            f"MedianPruner(n_startup_trials=2, n_warmup_steps={warm}) on the per-epoch validation accuracy; "
            "live: the trial's process is terminated when pruned")


QMC_SEED = 0  # one Sobol sequence for every study: the same candidate points for every arm of a space


def make_sampler(plan: TuningPlan, study_name: str, n_trials_so_far: int) -> tuple[Any, str]:
    """The sampler and its description. ``qmc``: a scrambled Sobol sequence with one fixed seed, so every study
    of the same space tries the same points in the same order (the first one drawn by a RandomSampler of the
    same seed, which Optuna's QMCSampler uses to learn the space) and a study rebuilt from scratch repeats them.
    ``tpe``: seeded by the study's history, so a resumed study does not replay the first samples of its first
    session, and by the worker (host/pid), so workers started together on one study do not draw the same."""
    import optuna

    if plan.sampler == "qmc":
        import warnings

        with warnings.catch_warnings():  # "experimental since optuna 3.0": stable in use, and noise in every log
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=QMC_SEED,
                                                 warn_asynchronous_seeding=False, warn_independent_sampling=False)
        return sampler, f"QMCSampler(sobol, scrambled, seed {QMC_SEED}): the same points for every study of a space"
    seed = int(text_sha256(f"{study_name}#{n_trials_so_far}#{owner_token()}")[:8], 16)
    return optuna.samplers.TPESampler(seed=seed), "TPESampler (seeded per session)"


def open_study(cell: Cell, storage: Any, opts: TuneOptions) -> Any:
    import optuna

    study = optuna.create_study(storage=storage, study_name=cell.study_name, direction="maximize",
                                load_if_exists=True)
    study.sampler, _ = make_sampler(opts.plan, cell.study_name, len(study.trials))
    study.pruner, _ = make_pruner(opts.pruner, cell.base.budget.epochs, opts.plan.pooled)
    return study


def objective_text(cell: Cell) -> str:
    if cell.objective_variants:
        return (f"mean over the variants {list(cell.objective_variants)} (seed {cell.base.seed}) of each run's "
                "validation accuracy at its selected epoch (test never seen)")
    return "best validation accuracy over epochs (test never seen)"


def study_attrs(cell: Cell, opts: TuneOptions) -> dict[str, Any]:
    _, pruner = make_pruner(opts.pruner, cell.base.budget.epochs, opts.plan.pooled)
    _, sampler = make_sampler(opts.plan, cell.study_name, 0)
    return {"peft3d.n_trials": opts.n_trials, "peft3d.counting": COUNTING_RULE,
            "peft3d.objective": objective_text(cell),
            "peft3d.space": space_description(cell.base, opts.plan.space == "shared"), "peft3d.sampler": sampler,
            "peft3d.pruner": pruner, "peft3d.tuning_seed": cell.base.seed, "peft3d.grid": cell.grid}


def open_studies(cells: list[Cell], storage: Any, retry: StaleRetry, opts: TuneOptions,
                 echo: Echo) -> dict[str, Any]:
    """Open every cell's study (interrupted trials marked FAIL and queued again), check that each can still get
    exactly N counted trials, then record the budget in its user attributes. Study name -> study."""
    studies, too_many = {}, []
    for cell in cells:
        study = open_study(cell, storage, opts)
        back = recover(study, retry)
        if back:
            echo(f"{cell.study_name}: trial(s) {back} were interrupted: marked FAIL (not counted), queued again")
        c = counts(study)
        if c["counted"] > opts.n_trials:
            too_many.append(f"{cell.study_name} ({c['counted']})")
        studies[cell.study_name] = study
    if too_many:
        raise ConfigError(f"equal budgets: --trials {opts.n_trials} is below the trials some studies already "
                          f"have: {', '.join(too_many)}; use at least that many or another --storage")
    for cell in cells:
        for k, v in study_attrs(cell, opts).items():
            studies[cell.study_name].set_user_attr(k, v)
    return studies


def recover_orphans(grid: str, cells: list[Cell], storage: Any, retry: StaleRetry, echo: Echo) -> None:
    """Stale trials of this grid's studies that are no longer in the grid (e.g. a method's config changed,
    so its cells got new studies): FAIL, so no study of this grid shows a RUNNING trial of a dead process."""
    import optuna

    current = {c.study_name for c in cells}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        name = summary.study_name
        if name.startswith(f"{grid}/") and name not in current:
            back = recover(optuna.load_study(study_name=name, storage=storage), retry)
            if back:
                echo(f"{name} (no longer in the grid): trial(s) {back} were interrupted: marked FAIL")


def equal_budget(counted: list[int], n_trials: int) -> bool:
    """True when there are studies and every one counted exactly N trials."""
    return bool(counted) and all(c == n_trials for c in counted)
