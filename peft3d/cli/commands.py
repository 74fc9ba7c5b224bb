"""``bench run``, ``bench table``, ``bench validate``."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer

from peft3d.cli.app import app, fail

GridOpt = typer.Option(..., "--grid", "-g", help="grid name (bench ls grids) or path to a .yaml file")
ResultsOpt = typer.Option(None, "--results", help="results folder (default ./results or $PEFT3D_RESULTS)")


def _roots(items: list[str] | None) -> dict[str, str]:
    out = {}
    for it in items or []:
        fam, sep, path = it.partition("=")
        if not sep or not path:
            fail(f"--data-root expects FAMILY=PATH (e.g. scanobjectnn=/data/ScanObjectNN/h5_files), got {it!r}")
        out[fam] = path
    return out


def _seeds(s: str | None) -> list[int] | None:
    if s is None:
        return None
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        fail(f"--seeds expects a comma-separated list of integers, got {s!r}")
        return None


def _check_roots(specs) -> None:
    from peft3d.datasets import DATASETS, check_root

    seen = set()
    for s in specs:
        key = (s.dataset, s.variant, s.data_root)
        if key in seen:
            continue
        seen.add(key)
        if DATASETS.meta(s.dataset).get("needs_root", True) and not s.data_root:
            fail(f"dataset {s.dataset} needs its files: set data_root in the grid or pass "
                 f"--data-root {s.dataset}=PATH (see: bench data info {s.dataset})")
        if s.data_root:
            problem = check_root(s.dataset, s.variant, s.data_root)
            if problem:
                fail(problem)


@app.command("validate")
def validate(grid: str = GridOpt, data_root: Optional[list[str]] = typer.Option(None, "--data-root"),
             seeds: Optional[str] = typer.Option(None, "--seeds")) -> None:
    """Check a grid (names, settings, data roots) without running it. Never imports torch."""
    from peft3d.grids.loader import expand

    specs = expand(grid, _seeds(seeds), _roots(data_root))
    _check_roots(specs)
    cells = {(s.backbone, s.weights, s.dataset, s.variant, s.method, s.preset) for s in specs}
    typer.echo(f"grid {grid}: OK — {len(specs)} runs ({len(cells)} cells × seeds)")


@app.command("run")
def run(grid: str = GridOpt, results: Optional[Path] = ResultsOpt,
        jobs: int = typer.Option(0, "--jobs", "-j", help="runs in parallel, each its own process (0 = auto: one "
                                 "single-threaded run per core on CPU, one run on a GPU)"),
        seeds: Optional[str] = typer.Option(None, "--seeds", help="override the grid's seeds, e.g. 0,1,2"),
        data_root: Optional[list[str]] = typer.Option(None, "--data-root", help="FAMILY=PATH"),
        device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda | cuda:N"),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow backend URI"),
        no_mlflow: bool = typer.Option(False, "--no-mlflow", help="do not mirror runs to MLflow"),
        dry_run: bool = typer.Option(False, "--dry-run", help="list what would run")) -> None:
    """Run every missing run of a grid (resumable), then write its table."""
    from peft3d.core.results import results_dir
    from peft3d.grids.loader import expand
    from peft3d.schedule.runner import pending

    specs = expand(grid, _seeds(seeds), _roots(data_root), device)
    _check_roots(specs)
    root = results_dir(results)
    todo = pending(specs, root)
    typer.echo(f"grid {grid}: {len(specs)} runs, {len(specs) - len(todo)} already done, {len(todo)} to run "
               f"→ {root}")
    if dry_run:
        for s in todo:
            typer.echo(f"  {s.run_id}  {s.label}")
        return
    t0 = time.time()
    if jobs <= 0:
        jobs = 1 if any(s.device.startswith("cuda") for s in todo) else max(1, min(os.cpu_count() or 1, 4))
    if todo:
        _run_with_progress(todo, root, jobs, None if no_mlflow else tracking_uri, no_mlflow, grid)
    n_bad = _write_table(grid, specs, root, echo=True)
    typer.echo(f"wall time {time.time() - t0:.0f} s")
    if n_bad:
        typer.secho(f"{n_bad} run(s) did not succeed (see 'Not in the table'); re-run to retry them", fg="yellow",
                    err=True)
        raise typer.Exit(1)


def _run_with_progress(todo, root: Path, jobs: int, uri: str | None, no_mlflow: bool, grid: str) -> None:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from peft3d.schedule.runner import run_specs

    mirror = None
    if not no_mlflow:
        from peft3d.reporting.mirror import Mirror, tracking_uri

        mirror = Mirror(tracking_uri(root, uri), experiment=f"peft3d/{Path(grid).stem}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}")) as bar:
        total = bar.add_task("grid", total=len(todo), info="")
        tasks: dict[str, int] = {}

        def on_event(job) -> None:
            rid = job.spec.run_id
            if rid not in tasks:
                tasks[rid] = bar.add_task(f"  {escape(job.spec.label)}", total=job.spec.budget.epochs, info="starting")
            if job.last:
                bar.update(tasks[rid], completed=job.last["epoch"],
                           info=f"loss {job.last['train_loss']:.3f} val {100 * job.last['val_acc']:.1f}")

        def on_done(job, result) -> None:
            rid = job.spec.run_id
            status = result.get("status", "?")
            info = (f"test {100 * result['metrics']['test_acc']:.1f}" if status == "success"
                    else f"[red]failed: {escape(str(result.get('error'))[:80])}")
            if rid in tasks:
                bar.update(tasks[rid], info=info)
                bar.remove_task(tasks[rid])
            bar.console.print(f"{'✓' if status == 'success' else '✗'} {escape(job.spec.label)}  {info}")
            bar.advance(total)
            if mirror is not None and result:
                try:
                    mirror.log(result)
                except Exception as e:  # the mirror is secondary: never lose a run over it
                    bar.console.print(f"[yellow]MLflow mirror failed for {rid}: {escape(str(e))}")

        run_specs(todo, root, jobs, on_event, on_done)


def _write_table(grid: str, specs, root: Path, echo: bool) -> int:
    """Write the grid's tables; returns the number of runs that are not successes."""
    from peft3d.reporting.tables import runs_frame, write_tables

    df = runs_frame(specs, root)
    md_path, csv_path, md = write_tables(Path(grid).stem, df, root)
    if echo:
        typer.echo(md)  # plain markdown: pastes into a paper draft or an issue as is
        typer.echo(f"wrote {md_path} and {csv_path}")
    return int((df["status"] != "success").sum())


@app.command("table")
def table(grid: str = GridOpt, results: Optional[Path] = ResultsOpt,
          seeds: Optional[str] = typer.Option(None, "--seeds"),
          data_root: Optional[list[str]] = typer.Option(None, "--data-root"),
          layout: str = typer.Option("default", "--layout", "-l",
                                     help="default | main | peft | modality | runs (paper layouts)"),
          fmt: str = typer.Option("md", "--format", "-f", help="md | csv | latex"),
          reference: Optional[str] = typer.Option(None, "--reference",
                                                  help="'paper': add the Any2Point paper's published figures"),
          dataset: Optional[str] = typer.Option(None, "--dataset", help="restrict to one dataset (peft: which)"),
          method: Optional[str] = typer.Option(None, "--method", help="main/modality: the method shown "
                                               "(default any2point when present, else all)"),
          versus: Optional[str] = typer.Option(None, "--versus", help="method the others are compared with "
                                               "(default any2point, else linear)"),
          tuned: bool = typer.Option(False, "--tuned", help="the tuned runs written by 'bench tune'")) -> None:
    """Rebuild a grid's tables from its result JSONs only (no training); paper layouts with --layout."""
    from peft3d.core.results import atomic_write_text, results_dir
    from peft3d.grids.loader import expand
    from peft3d.reporting.layouts import FORMATS, LAYOUTS, REFERENCES, render_layout
    from peft3d.reporting.tables import runs_frame

    if layout not in LAYOUTS:
        fail(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if reference is not None and reference not in REFERENCES:
        fail(f"--reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    root = results_dir(results)
    name = Path(grid).stem
    if tuned:
        from peft3d.tuning.tune import tuned_specs

        specs, name = tuned_specs(name, root), f"{name}.tuned"
    else:
        specs = expand(grid, _seeds(seeds), _roots(data_root))
    if layout == "default" and fmt == "md" and not (reference or versus or dataset):
        if tuned:
            _write_tuned(name, root)
        else:
            _write_table(name, specs, root, echo=True)
        return
    df = runs_frame(specs, root)
    opts: dict = {"reference": reference}
    if layout in ("default", "peft"):
        opts["versus"] = versus
    if layout in ("main", "modality"):
        opts["method"] = method
    if layout == "default" and dataset:
        from peft3d.reporting.layouts import datasets_of

        df = df[df["dataset"].isin(datasets_of(df, dataset))]
    elif layout != "default":
        opts["dataset"] = dataset
    text = render_layout(name, df, layout, fmt, **opts)
    typer.echo(text)
    ext = {"md": "md", "csv": "csv", "latex": "tex"}[fmt]
    out = root / "tables" / f"{name}.{layout}{'.paper' if reference else ''}.{ext}"
    atomic_write_text(out, text)
    typer.echo(f"wrote {out}", err=True)


def _write_tuned(name: str, root: Path) -> None:
    from peft3d.tuning.tune import write_tuned_tables

    md_path, md, _ = write_tuned_tables(name.removesuffix(".tuned"), root)
    typer.echo(md)
    typer.echo(f"wrote {md_path}")
