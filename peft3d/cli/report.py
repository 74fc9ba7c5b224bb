"""``bench report``: a self-contained HTML report of a grid (:mod:`peft3d.reporting.report`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from peft3d.cli.app import GridOpt, IncludeOpt, ResultsOpt, app, fail, open_grid, require_results


@app.command("report")
def report(grid: str = GridOpt, results: Optional[Path] = ResultsOpt,
           out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default "
                                              "results/report/<grid>.html)"),
           reference: Optional[str] = typer.Option(None, "--reference", help="'paper': the Any2Point paper's "
                                                   "figures beside ours in the layouts"),
           tuned: bool = typer.Option(False, "--tuned", help="the tuned runs written by 'bench tune'"),
           seeds: Optional[str] = typer.Option(None, "--seeds"),
           data_root: Optional[list[str]] = typer.Option(None, "--data-root"),
           include: Optional[list[Path]] = IncludeOpt) -> None:
    """Write one self-contained HTML file with the grid's tables and plots (from result JSONs only)."""
    from peft3d.core.result import results_dir
    from peft3d.reporting.report import write_report

    if reference not in (None, "paper"):
        fail(f"--reference must be 'paper', got {reference!r}")
    root = results_dir(results)
    expanded = open_grid(grid, include, seeds, data_root)
    if not tuned:  # the tuned path says itself that nothing was tuned there
        require_results(root, expanded.name)
    name, specs = expanded.name, expanded.specs
    extra, manifest = None, None
    if tuned:  # the tuned runs, and the manifest whose trials the learning-rate sensitivity section plots
        from peft3d.tuning.final import read_manifest, tuned_table

        specs, budget = tuned_table(name, root)  # the same budget line as under the tuned tables
        manifest, extra = read_manifest(root, name), [budget]
        name = f"{name}.tuned"
    path = write_report(name, specs, root, out, reference, extra, expanded.compare_to, manifest)
    typer.echo(f"wrote {path}")
