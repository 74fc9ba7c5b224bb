"""``bench tune``: equal-budget Optuna search per cell, then the best configuration on the grid's seeds
(:mod:`peft3d.tuning.tune`)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Optional

import typer

from peft3d.cli.app import (
    GridOpt,
    IncludeOpt,
    ResultsOpt,
    app,
    check_roots,
    check_storage,
    fail,
    open_grid,
    write_table,
)
from peft3d.grids.plan import Precision


def _sigterm_as_interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # `kill PID` cleans up like Ctrl-C (trial marked interrupted, MLflow runs KILLED)


def _show_studies(cells: list, as_json: bool) -> None:
    """The studies a tune would fill: name, runs, tuning seed and lr range (a grid may centre one method's range
    elsewhere, so the range is per study)."""
    import json

    from peft3d.tuning.cells import space_description

    rows = [{"study": c.study_name, "runs": len(c.specs), "tuning_seed": c.base.seed,
             "lr": space_description(c.base)["lr"]} for c in cells]
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    for r in rows:
        typer.echo(f"  {r['study']}  ({r['runs']} runs, trials at seed {r['tuning_seed']}, lr {r['lr']})")


def _show_progress(grid: str, cells: list, root: Path, url: str, trials: int, as_json: bool,
                   precision: Precision | None = None, perf: Path | None = None) -> None:
    import json

    from peft3d.tuning.budget import redact
    from peft3d.tuning.pricing import read_perf_ratios
    from peft3d.tuning.progress import grid_progress, progress_lines

    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        fail(f"no tuning storage at {url[len('sqlite:///'):]}: nothing tuned yet for grid {grid} in {root}; "
             f"fix: pass the --results (or --storage) the study runs with")
    check_storage(url)
    ratios = read_perf_ratios(perf) if perf is not None else None
    p = grid_progress(grid, cells, root, url, trials, precision, ratios)
    if as_json:
        print(json.dumps({**p, "storage": redact(url)}, indent=1))
        return
    for line in progress_lines(p):
        typer.echo(line)


@app.command("tune")
def tune(grid: str = GridOpt, trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Optuna trials per "
                                                                  "cell, the same for every cell (equal budgets); "
                                                                  "default: the grid's tuning.trials"),
         results: Optional[Path] = ResultsOpt,
         storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL "
                                               "(default sqlite:///<results>/optuna.db)"),
         jobs: int = typer.Option(1, "--jobs", "-j", help="tuned runs in parallel (trials run one at a time)"),
         pruner: str = typer.Option("median", "--pruner", help="median | none"),
         heartbeat: int = typer.Option(60, "--heartbeat", help="seconds between a trial's heartbeats in the "
                                       "storage; a trial silent for 3 beats (its worker gone) is retried"),
         seeds: Optional[str] = typer.Option(None, "--seeds", help="override the grid's seeds (first = tuning seed)"),
         data_root: Optional[list[str]] = typer.Option(None, "--data-root", help="FAMILY=PATH"),
         device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda | cuda:N"),
         tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow backend URI"),
         no_mlflow: bool = typer.Option(False, "--no-mlflow", help="no MLflow runs"),
         dry_run: bool = typer.Option(False, "--dry-run", help="list the studies"),
         progress: bool = typer.Option(False, "--progress", help="where each cell stands (trials, best, tuned "
                                       "runs) and the core-hours spent and left; starts nothing"),
         as_json: bool = typer.Option(False, "--json", help="with --progress or --dry-run: print JSON"),
         perf: Optional[Path] = typer.Option(None, "--perf", help="with --progress: a `bench perf --json` record "
                                             "or a folder of them, to price methods with no finished run yet by "
                                             "their step-time ratio to the linear probe"),
         finish_cells: bool = typer.Option(False, "--finish-cells", help="run each cell's tuned runs as soon as "
                                           "its study is full (results land cell by cell); on by default where "
                                           "the grid sets tuning.finish_cells"),
         include: Optional[list[Path]] = IncludeOpt) -> None:
    """Tune every backbone × dataset × method cell with the same number of Optuna trials (validation metric,
    pruning on the validation curve), then run the best configuration of each on the grid's seeds.
    Resumable: re-run the same command after an interruption. Several workers (processes, machines, SLURM
    tasks: bench submit --tune) may share one --storage: each study still gets exactly --trials trials."""
    from peft3d.core.result import ensure_writable, results_dir
    from peft3d.reporting.mirror import tracking_uri as default_uri
    from peft3d.tuning.budget import storage_url
    from peft3d.tuning.cells import cells_of
    from peft3d.tuning.final import manifest_path, tuned_table
    from peft3d.tuning.precision import check_covered
    from peft3d.tuning.tune import TuneOptions, Tuner

    expanded = open_grid(grid, include, seeds, data_root, device)
    specs, name = expanded.specs, expanded.name
    root = results_dir(results)
    plan = expanded.tuning
    trials = trials if trials is not None else plan.trials
    if trials is None:
        fail(f"grid {name} sets no tuning.trials; fix: pass --trials N")
    if dry_run:  # listing the studies needs no data
        _show_studies(cells_of(specs, name, plan.objective_variants, plan.seed), as_json)
        return
    if perf is not None and not progress:
        fail("--perf prices what is left: it goes with --progress; fix: add --progress, or drop --perf")
    if as_json and not progress:  # would otherwise start the workers and print their log, not JSON
        fail("--json prints the progress or the studies as JSON: it goes with --progress or --dry-run; fix: add "
             "one of them, or drop --json")
    if progress:
        _show_progress(name, cells_of(specs, name, plan.objective_variants, plan.seed), results_dir(results),
                       storage_url(root, storage), trials, as_json, plan.precision, perf)
        return
    check_roots(specs)
    if pruner not in ("median", "none"):
        fail(f"--pruner must be 'median' or 'none', got {pruner!r}")
    if heartbeat < 1:
        fail(f"--heartbeat must be >= 1 second, got {heartbeat}")
    if storage is not None:
        check_storage(storage)
    check_covered(plan.precision, specs, f"grid {name}")  # before anything is written
    ensure_writable(root)
    os.environ.setdefault("PEFT3D_CACHE", str(root / "cache"))  # one evaluation FPS cache for every study
    opts = TuneOptions(n_trials=trials, storage=storage_url(root, storage), pruner=pruner, jobs=max(1, jobs),
                       mlflow_uri=None if no_mlflow else default_uri(root, tracking_uri), heartbeat_s=heartbeat,
                       plan=plan, finish_cells=finish_cells or plan.finish_cells)
    t0 = time.time()
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    tuner = Tuner(name, specs, root, opts, echo=typer.echo)
    typer.echo(f"grid {name}: {len(tuner.cells)} studies × {trials} trials → {root} (storage {opts.storage})")
    try:
        tuner.run()
    except KeyboardInterrupt:
        typer.secho("interrupted: the running trial is marked interrupted (not counted); re-run the same command "
                    "to resume", fg="yellow", err=True)
        raise typer.Exit(130) from None
    tuned, footer = tuned_table(name, root)
    n_bad = write_table(expanded, root, tuned, name=f"{name}.tuned", footer=footer)
    typer.echo(f"manifest {manifest_path(root, name)}; wall time {time.time() - t0:.0f} s")
    if n_bad:
        typer.secho(f"{n_bad} tuned run(s) did not succeed; re-run to retry them", fg="yellow", err=True)
        raise typer.Exit(1)
