"""``bench table``: rebuild a grid's tables from its result JSONs (paper layouts with ``--layout``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from peft3d.cli.app import GridOpt, IncludeOpt, ResultsOpt, app, fail, open_grid, require_results, write_table


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
                                               "(default the compared-to method when it ran, else all)"),
          versus: Optional[str] = typer.Option(None, "--versus", "--compare-to", help="method the others are "
                                               "compared with (default the grid's compare_to, else its first)"),
          tuned: bool = typer.Option(False, "--tuned", help="the tuned runs written by 'bench tune'"),
          include: Optional[list[Path]] = IncludeOpt) -> None:
    """Rebuild a grid's tables from its result JSONs only (no training); paper layouts with --layout."""
    from peft3d.core.result import results_dir
    from peft3d.reporting.layouts import FORMATS, LAYOUTS, REFERENCES

    if layout not in LAYOUTS:
        fail(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if reference is not None and reference not in REFERENCES:
        fail(f"--reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    root = results_dir(results)
    expanded = open_grid(grid, include, seeds, data_root)
    if not tuned:  # the tuned path says itself that nothing was tuned there
        require_results(root, expanded.name)
    name, specs, footer = expanded.name, expanded.specs, None
    if tuned:
        from peft3d.tuning.final import tuned_table

        specs, footer = tuned_table(name, root)
        name = f"{name}.tuned"
    # another comparison method than the grid's is a variant: it never overwrites the grid's own table
    write_table(expanded, root, specs, versus, name=name, layout=layout, fmt=fmt, reference=reference,
                dataset=dataset, method=method, footer=footer, variant=versus is not None)
