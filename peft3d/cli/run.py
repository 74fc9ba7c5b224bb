"""``bench run``: run every missing run of a grid (resumable), then write its table."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from peft3d.cli.app import GridOpt, IncludeOpt, ResultsOpt, app, check_roots, open_grid, write_table


@app.command("run")
def run(grid: str = GridOpt, results: Optional[Path] = ResultsOpt, include: Optional[list[Path]] = IncludeOpt,
        jobs: int = typer.Option(0, "--jobs", "-j", help="CPU runs in parallel, each its own process (0 = "
                                 "--devices auto)"),
        devices: Optional[str] = typer.Option(None, "--devices", help="auto | cpu | cuda:0,cuda:1,...: one "
                                              "worker per device slot, pinned via CUDA_VISIBLE_DEVICES (auto: "
                                              "every visible GPU, else one single-threaded run per core)"),
        per_device: int = typer.Option(1, "--per-device", help="workers per listed device (cpu: worker count)"),
        seeds: Optional[str] = typer.Option(None, "--seeds", help="override the grid's seeds, e.g. 0,1,2"),
        data_root: Optional[list[str]] = typer.Option(None, "--data-root", help="FAMILY=PATH"),
        device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda | cuda:N"),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow backend URI"),
        no_mlflow: bool = typer.Option(False, "--no-mlflow", help="do not mirror runs to MLflow"),
        dry_run: bool = typer.Option(False, "--dry-run", help="list what would run")) -> None:
    """Run every missing run of a grid (resumable), then write its table."""
    from peft3d.core.result import ensure_writable, results_dir
    from peft3d.schedule.devices import parse_devices
    from peft3d.schedule.runner import pending

    expanded = open_grid(grid, include, seeds, data_root, device)
    specs = expanded.specs
    check_roots(specs)
    root = results_dir(results)
    todo = pending(specs, root)
    typer.echo(f"grid {expanded.name}: {len(specs)} runs, {len(specs) - len(todo)} already done, {len(todo)} to "
               f"run → {root}")
    if dry_run:
        for s in todo:
            typer.echo(f"  {s.run_id}  {s.label}")
        return
    # the devices are checked before anything is written: a GPU that is not there refuses the command up front
    slots = parse_devices(devices, per_device, jobs, want_cuda=any(s.device.startswith("cuda") for s in specs))
    ensure_writable(root)
    t0 = time.time()
    if todo:
        typer.echo(f"slots: {', '.join(s.name for s in slots)}")
    mirror = None if no_mlflow else _mirror(root, tracking_uri, expanded.name)
    if todo:
        _run_with_progress(todo, root, slots, mirror)
    if mirror is not None:
        _backfill(mirror, specs, root)
    n_bad = write_table(expanded, root)
    typer.echo(f"wall time {time.time() - t0:.0f} s")
    if n_bad:
        typer.secho(f"{n_bad} run(s) did not succeed (see 'Not in the table'); re-run to retry them", fg="yellow",
                    err=True)
        raise typer.Exit(1)


def _mirror(root: Path, uri: str | None, grid_name: str):
    from peft3d.reporting.mirror import Mirror, tracking_uri

    return Mirror(tracking_uri(root, uri), experiment=f"peft3d/{grid_name}", lock_dir=root)


def _backfill(mirror, specs, root: Path) -> None:
    """Mirror every finished run of the grid that MLflow lacks (finished elsewhere, or by a killed bench run)."""
    from peft3d.core.result import load_results

    try:
        added = mirror.backfill([r for r in load_results(root, [s.run_id for s in specs]).values() if r])
    except Exception as e:  # the mirror is secondary: never fail a grid over it
        typer.secho(f"MLflow backfill failed: {e}", fg="yellow", err=True)
        return
    if added:
        typer.echo(f"mirrored {len(added)} finished run(s) that MLflow lacked")


def _run_with_progress(todo, root: Path, slots, mirror) -> None:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from peft3d.schedule.runner import run_specs

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}")) as bar:
        total = bar.add_task("grid", total=len(todo), info="")
        tasks: dict[str, int] = {}

        def on_event(job) -> None:
            rid = job.spec.run_id
            if rid not in tasks:
                slot = job.slot.name if job.slot else ""
                tasks[rid] = bar.add_task(f"  [{slot}] {escape(job.spec.label)}", total=job.spec.budget.epochs,
                                          info="starting")
            if job.last:
                bar.update(tasks[rid], completed=job.last["epoch"],
                           info=f"loss {job.last['train_loss']:.3f} val {100 * job.last['val_acc']:.1f}")

        def on_done(job, result) -> None:
            rid = job.spec.run_id
            ok = result is not None and result.ok and result.metrics is not None
            info = (f"test {100 * result.metrics.test_acc:.1f}" if ok
                    else f"[red]failed: {escape(str(result.error if result else 'no result')[:80])}")
            if rid in tasks:
                bar.update(tasks[rid], info=info)
                bar.remove_task(tasks[rid])
            bar.console.print(f"{'✓' if ok else '✗'} {escape(job.spec.label)}  {info}")
            bar.advance(total)
            if mirror is not None and result:
                try:
                    mirror.log(result)
                except Exception as e:  # the mirror is secondary: never lose a run over it
                    bar.console.print(f"[yellow]MLflow mirror failed for {rid}: {escape(str(e))}")

        def on_elsewhere(spec) -> None:
            bar.console.print(f"· {escape(spec.label)}  done by another process")
            bar.advance(total)

        run_specs(todo, root, on_event=on_event, on_done=on_done, slots=slots, on_elsewhere=on_elsewhere)
