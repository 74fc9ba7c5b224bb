"""``bench tune``: an Optuna study per backbone × weights × dataset × method cell, the same trial budget for every
method, then the best configuration on the grid's seeds as ordinary runs (protocol.md "Equal budgets").

One file per concern; :class:`Tuner` only puts them in order:

- :mod:`~peft3d.tuning.cells`: the cells and the search space (the same lr and weight-decay ranges for every
  method, plus the method's own knobs). Objective: the best validation accuracy of the run (the epoch selection
  of protocol.md); the test set is never looked at.
- :mod:`~peft3d.tuning.budget`: equal budgets — every study of the grid gets exactly N counted trials, recorded
  in its user attributes, the manifest and every tuned result.
- :mod:`~peft3d.tuning.trials`: trial execution — each trial an ordinary run in its own worker process, pruned
  live, interrupted trials queued again; :mod:`~peft3d.tuning.sharing`: several workers on one storage.
- :mod:`~peft3d.tuning.final`: the final runs on the grid's seeds, the manifest and the tuned tables.
- :mod:`~peft3d.tuning.precision`: seeds until precise — the extra seeds a grid's ``tuning.precision`` rule adds
  to a cell whose table CI is wider than its target.
- :mod:`~peft3d.tuning.progress`: where a grid's studies stand and what they cost (``bench tune --progress``).
- :mod:`~peft3d.tuning.tracking`: MLflow (experiment ``peft3d/<grid>/tune``), a parent run per study and a
  nested run per trial; on start, RUNNING runs and trials whose owner process is gone are marked KILLED / FAIL,
  so an interrupted tune never leaves RUNNING runs behind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from peft3d.core.errors import ConfigError
from peft3d.core.spec import RunSpec
from peft3d.tuning.budget import Echo, TuneOptions, counts, open_studies, recover_orphans
from peft3d.tuning.cells import Cell, cells_of, lr_edge_note
from peft3d.tuning.final import Blocks, FinalRuns, read_manifest
from peft3d.tuning.precision import check_covered
from peft3d.tuning.sharing import StaleRetry, open_storage
from peft3d.tuning.tracking import TuneTracker
from peft3d.tuning.trials import Execute, TrialLoop, run_trial_process

__all__ = ["Tuner", "TuneOptions"]


class Tuner:
    """Tune every cell of a grid to N trials, then run each cell's best configuration on the grid's seeds."""

    def __init__(self, grid: str, specs: list[RunSpec], root: Path, opts: TuneOptions,
                 execute: Execute = run_trial_process, echo: Echo = print) -> None:
        if opts.n_trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {opts.n_trials}")
        self.grid, self.root, self.opts, self.execute, self.echo = grid, root, opts, execute, echo
        self.cells = cells_of(specs, grid, opts.plan.objective_variants, opts.plan.seed)
        check_covered(opts.plan.precision, specs, f"grid {grid}")
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
        recover_orphans(self.grid, self.cells, self.storage, self.retry, self.echo)
        self.studies = open_studies(self.cells, self.storage, self.retry, self.opts, self.echo)

    def tune_cell(self, cell: Cell, index: int, wait: bool = True) -> bool:
        """Run trials of this cell's study until N are counted — by this worker or by others sharing the study
        (see :meth:`TrialLoop.tune_cell` for ``wait``); True once N are counted."""
        loop = TrialLoop(self.storage, self.retry, self.tracker, self.opts.n_trials, self.opts.heartbeat_s,
                         self.root, self.execute, self.echo, len(self.cells), self.opts.plan.space == "shared")
        return loop.tune_cell(cell, self.studies[cell.study_name], index, wait)

    def final(self) -> FinalRuns:
        return FinalRuns(self.grid, self.root, self.opts, self.cells, self.studies, self.echo)

    def run(self, run_final: Callable[[list[RunSpec], Blocks], None] | None = None) -> dict:
        """Tune every cell to N trials, then run the best configurations on the grid's seeds; returns the
        manifest. ``run_final(todo, blocks)`` replaces the worker processes of the final runs (tests)."""

        self.prepare()
        later: list[tuple[int, Cell]] = []  # cells whose last trials other workers were running
        for i, cell in enumerate(self.cells, 1):
            if not self.tune_cell(cell, i, wait=False):
                later.append((i, cell))
            elif self.opts.finish_cells:  # this cell's results land before the next cell is tuned
                self.finish([cell], run_final)
            if self.opts.finish_cells:
                later = self._finish_full(later, run_final)
        for i, cell in later:  # nothing else to tune: wait for them
            self.tune_cell(cell, i)
            if self.opts.finish_cells:
                self.finish([cell], run_final)
        self.finish(self.cells, run_final)
        return read_manifest(self.root, self.grid)

    def _finish_full(self, cells: list[tuple[int, Cell]], run_final) -> list[tuple[int, Cell]]:
        """Run the final runs of the cells whose studies other workers have filled meanwhile; the rest."""
        rest = []
        for i, cell in cells:
            if counts(self.studies[cell.study_name])["counted"] >= self.opts.n_trials:
                self.finish([cell], run_final)
            else:
                rest.append((i, cell))
        return rest

    def finish(self, cells: list[Cell], run_final: Callable[[list[RunSpec], Blocks], None] | None) -> None:
        """Run the best configurations of ``cells`` on the grid's seeds (what is not done yet), then write the
        manifest of every cell tuned so far."""
        from peft3d.schedule.runner import pending

        final = self.final()
        tried: set[str] = set()
        while True:  # the precision rule may add seeds once the runs before them have landed
            specs, blocks, missing = final.specs(cells)
            todo = pending(specs, self.root)
            if not tried:
                for m in missing:
                    self.echo(f"{m}: no complete trial (all pruned or failed): no tuned runs for this cell")
                best_lr = {b["study"]: (b["best_params"] or {}).get("lr") for b in blocks.values()}
                for note in filter(None, (lr_edge_note(c, best_lr.get(c.study_name)) for c in cells)):
                    self.echo(note)  # from the blocks just built: no second read of the studies
            which = cells[0].study_name if len(cells) == 1 else f"{len(cells)} cells"  # a log line names its cell
            self.echo(f"tuned runs of {which}: {len(specs)}, {len(specs) - len(todo)} already done, "
                      f"{len(todo)} to run")
            fresh = [s for s in todo if s.run_id not in tried]
            if not fresh:  # done, or only runs that already failed in this call: never loop on them
                break
            tried |= {s.run_id for s in fresh}
            self._write_manifest(final)  # before they start: `bench status --tuned` lists them as running
            (run_final or final.run)(fresh, blocks)
        for s in specs:
            final.annotate(s.run_id, blocks[s.run_id])
        self._write_manifest(final)

    @staticmethod
    def _write_manifest(final: FinalRuns) -> None:
        """The manifest of every cell tuned so far (``bench status`` / ``bench table --tuned`` read it)."""
        every, _, without = final.specs()
        final.write_manifest(every, without)
