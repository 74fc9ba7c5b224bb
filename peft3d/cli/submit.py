"""``bench submit`` (a grid's missing runs as one SLURM/local job array, through submitit) and ``bench status``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from peft3d.cli.app import GridOpt, IncludeOpt, ResultsOpt, app, check_roots, check_storage, fail, open_grid


def _minutes(hms: str | None) -> int | None:
    """SLURM-style time: MM, HH:MM:SS or D-HH:MM:SS -> whole minutes (rounded up)."""
    if hms is None:
        return None
    try:
        days, _, rest = hms.rpartition("-")
        parts = [int(x) for x in rest.split(":")]
        if len(parts) == 1:
            h, m, s = 0, parts[0], 0
        else:
            h, m, s = ([0] * (3 - len(parts)) + parts)[-3:]
        total = (int(days or 0) * 24 + h) * 60 + m + (1 if s else 0)
    except ValueError:
        total = 0
    if total <= 0:
        fail(f"--time expects HH:MM:SS (or D-HH:MM:SS, or minutes), got {hms!r}")
    return total


# bench submit's options that only configure tuning workers, by parameter name -> flag
TUNE_ONLY = {"trials": "--trials", "workers": "--workers", "storage": "--storage", "pruner": "--pruner",
             "heartbeat": "--heartbeat", "finish_cells": "--finish-cells"}


def _refuse_tune_options(ctx: typer.Context) -> None:
    """Without --tune, a tuning option the user typed would be silently ignored (runs at the grid's lr instead of
    tuning workers): refuse it in one line. The context's parameter source tells typed from default values; it is
    compared by name because recent typer releases carry their own copy of click's enum."""
    typed = [flag for name, flag in TUNE_ONLY.items()
             if getattr(ctx.get_parameter_source(name), "name", None) in ("COMMANDLINE", "ENVIRONMENT")]
    if typed:
        fail(f"{', '.join(typed)} configure{'s' if len(typed) == 1 else ''} tuning workers: "
             f"{'it goes' if len(typed) == 1 else 'they go'} with --tune; fix: add --tune, or drop "
             f"{'it' if len(typed) == 1 else 'them'}")


@app.command("submit")
def submit(ctx: typer.Context, grid: str = GridOpt, results: Optional[Path] = ResultsOpt,
           seeds: Optional[str] = typer.Option(None, "--seeds"),
           data_root: Optional[list[str]] = typer.Option(None, "--data-root", help="FAMILY=PATH"),
           executor: str = typer.Option("slurm", "--executor", help="slurm | local (this machine, same path)"),
           partition: Optional[str] = typer.Option(None, "--partition"),
           gpus_per_task: int = typer.Option(0, "--gpus-per-task", help="GPUs per run (>0: the runs use cuda)"),
           cpus_per_task: int = typer.Option(1, "--cpus-per-task", help="CPU cores per run (torch threads)"),
           mem: Optional[str] = typer.Option(None, "--mem", help="memory per task, SLURM syntax (e.g. 32G)"),
           time_: Optional[str] = typer.Option("04:00:00", "--time", help="time limit per task, HH:MM:SS; a run "
                                               "that reaches it checkpoints and is requeued"),
           max_parallel: Optional[int] = typer.Option(None, "--max-parallel", help="array tasks running at once"),
           account: Optional[str] = typer.Option(None, "--account"),
           qos: Optional[str] = typer.Option(None, "--qos"),
           tune: bool = typer.Option(False, "--tune", help="submit tuning workers (bench tune) instead of runs"),
           trials: Optional[int] = typer.Option(None, "--trials", "-n", help="--tune: Optuna trials per cell"),
           workers: int = typer.Option(2, "--workers", help="--tune: tuning workers sharing the studies"),
           storage: Optional[str] = typer.Option(None, "--storage", help="--tune: Optuna storage URL shared by the "
                                                 "workers (postgresql://… across machines)"),
           pruner: str = typer.Option("median", "--pruner", help="--tune: median | none"),
           heartbeat: int = typer.Option(60, "--heartbeat", help="--tune: seconds between trial heartbeats"),
           finish_cells: bool = typer.Option(False, "--finish-cells", help="--tune: each cell's tuned runs as soon "
                                             "as its study is full (default where the grid sets "
                                             "tuning.finish_cells)"),
           dry_run: bool = typer.Option(False, "--dry-run", help="list what would be submitted"),
           include: Optional[list[Path]] = IncludeOpt) -> None:
    """Submit a grid's missing runs as one job array (submitit map_array) and return; see bench status.
    With --tune: submit --workers tuning workers (bench tune on one shared --storage) instead."""
    from peft3d.core.result import results_dir
    from peft3d.schedule.claims import holder
    from peft3d.schedule.runner import pending

    if executor not in ("slurm", "local"):
        fail(f"--executor must be slurm or local, got {executor!r}")
    if cpus_per_task < 1 or gpus_per_task < 0 or (max_parallel is not None and max_parallel < 1):
        fail("--cpus-per-task and --max-parallel must be >= 1, --gpus-per-task >= 0")
    if not tune:
        _refuse_tune_options(ctx)
    expanded = open_grid(grid, include, seeds, data_root, "cuda" if gpus_per_task else None)
    specs = expanded.specs
    check_roots(specs)
    root = results_dir(results)
    opts = {"partition": partition, "gpus_per_task": gpus_per_task, "cpus_per_task": cpus_per_task, "mem": mem,
            "time_min": _minutes(time_), "max_parallel": max_parallel, "account": account, "qos": qos}
    if tune:
        argv = ["--grid", grid, "--results", str(root), "--pruner", pruner, "--heartbeat", str(heartbeat)]
        argv += [x for s, opt in ((seeds, "--seeds"), (storage, "--storage")) if s for x in (opt, s)]
        argv += [x for r in data_root or [] for x in ("--data-root", r)]
        argv += [x for f in include or [] for x in ("--include", str(Path(f).resolve()))]
        argv += ["--device", "cuda"] if gpus_per_task else []
        argv += ["--finish-cells"] if finish_cells else []
        budget = trials if trials is not None else expanded.tuning.trials
        _submit_tune(argv, budget, workers, storage, root, executor, opts, expanded.name, dry_run)
        return
    todo = [s for s in pending(specs, root) if holder(root, s.run_id) is None]
    typer.echo(f"grid {grid}: {len(specs)} runs, {len(specs) - len(todo)} done or running, {len(todo)} to submit "
               f"({executor}) → {root}")
    if dry_run or not todo:
        for s in todo:
            typer.echo(f"  {s.run_id}  {s.label}")
        return
    from peft3d.schedule.submit import submit_runs

    try:
        ids = submit_runs(todo, root, executor, opts, expanded.name)
    except Exception as e:  # sbatch missing / rejected: one line, nothing recorded
        fail(f"submission failed ({executor}): {' '.join(str(e).split())[:300]}")
    typer.echo(f"submitted {len(ids)} task(s): {ids[0]}{' … ' + ids[-1] if len(ids) > 1 else ''}; "
               f"recorded in {root / 'submissions.jsonl'}; follow with: bench status --grid {grid}")


def _submit_tune(argv: list[str], trials: int | None, workers: int, storage: str | None, root: Path,
                 executor: str, opts: dict, grid: str, dry_run: bool) -> None:
    """``bench submit --tune``: ``workers`` array tasks, each running ``bench tune`` + ``argv`` on one storage."""
    from peft3d.schedule.submit import submit_tune
    from peft3d.tuning.budget import redact, storage_url

    if trials is None or trials < 1:
        fail("--tune needs --trials N (N >= 1; or the grid's tuning.trials): the trial budget of every study")
    if workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    if storage is not None:  # the scheme and driver only: the workers' nodes may reach a server this one cannot
        check_storage(storage, connect=False)
    url = storage_url(root, storage)
    if executor == "slurm" and url.startswith("sqlite"):
        typer.secho("warning: an sqlite storage on a shared file system is unreliable across nodes; prefer "
                    "--storage postgresql://…", fg="yellow", err=True)
    argv = [*argv, "--trials", str(trials)]
    typer.echo(f"grid {grid}: {workers} tuning worker(s) ({executor}) on storage {redact(url)} → {root}")
    if dry_run:
        typer.echo("  bench tune " + " ".join(redact(a) for a in argv))
        return
    try:
        ids = submit_tune(argv, workers, root, executor, opts, grid)
    except Exception as e:  # sbatch missing / rejected: one line, nothing recorded
        fail(f"submission failed ({executor}): {' '.join(str(e).split())[:300]}")
    typer.echo(f"submitted {len(ids)} tuning worker(s): {ids[0]}{' … ' + ids[-1] if len(ids) > 1 else ''}; "
               f"recorded in {root / 'submissions.jsonl'}; logs in {root / 'submitit'}")


@app.command("status")
def status(grid: str = GridOpt, results: Optional[Path] = ResultsOpt,
           seeds: Optional[str] = typer.Option(None, "--seeds"),
           as_json: bool = typer.Option(False, "--json", help="print JSON"),
           tuned: bool = typer.Option(False, "--tuned", help="the tuned runs of 'bench tune' (the grid's runs at "
                                      "each cell's chosen configuration) instead of the grid's own runs"),
           include: Optional[list[Path]] = IncludeOpt) -> None:
    """done / running (epoch) / queued / failed per run of a grid, from results, claims, checkpoints, jobs."""
    from peft3d.core.result import results_dir
    from peft3d.schedule.submit import run_states

    expanded, root = open_grid(grid, include, seeds), results_dir(results)
    specs, note = _tuned_specs(expanded.name, root) if tuned else (expanded.specs, _tuned_hint(expanded, root))
    rows = run_states(specs, root)
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
        extra = ""
        if r["state"] == "running":
            extra = f"epoch {r['epoch']}/{r['epochs']} on {r['where']}"
        elif r["checkpoint_epoch"] is not None:
            extra = f"checkpoint at epoch {r['checkpoint_epoch']}/{r['epochs']}"
        detail = f" ({r['detail']})" if r["detail"] else ""
        job = f" job {r['job']}" if r["job"] else ""
        typer.echo(f"{r['state']:8} {r['run_id']}  {r['label']}{job} {extra}{detail}".rstrip())
    typer.echo(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    if note:
        typer.echo(note)


def _tuned_specs(grid: str, root: Path) -> tuple[list, str]:
    """The tuned runs the manifest lists, and a line on the cells whose runs are not known yet (no best trial)."""
    from peft3d.core.spec import RunSpec
    from peft3d.tuning.final import read_manifest

    manifest = read_manifest(root, grid)
    studies = manifest["studies"].values()
    waiting = sum(1 for s in studies if not s.get("best_params"))
    note = (f"{waiting} of {len(studies)} cells have no best trial yet, so their tuned runs are not listed; "
            f"trials and what is left: bench tune --grid {grid} --progress") if waiting else ""
    return [RunSpec.from_dict(d) for d in manifest["runs"]], note


def _tuned_hint(expanded, root: Path) -> str:
    """A tuned grid reports its tuned runs, not its own (which run at the grid's untuned lr): say where they are."""
    from peft3d.tuning.final import manifest_path

    if not manifest_path(root, expanded.name).exists():  # a grid tuned with --trials has no tuning.trials
        return ""
    return (f"grid {expanded.name} is tuned (bench tune): the runs its tables report are listed by "
            f"bench status --grid {expanded.name} --tuned")
