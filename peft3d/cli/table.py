"""``bench table``: rebuild a grid's tables from its result JSONs (paper layouts with ``--layout``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from peft3d.cli.app import GridOpt, IncludeOpt, ResultsOpt, app, fail, open_grid, write_table


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
    from peft3d.core.result import atomic_write_text, results_dir
    from peft3d.reporting.layouts import FORMATS, LAYOUTS, REFERENCES, render_layout
    from peft3d.reporting.tables import runs_frame

    if layout not in LAYOUTS:
        fail(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if reference is not None and reference not in REFERENCES:
        fail(f"--reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    root = results_dir(results)
    expanded = open_grid(grid, include, seeds, data_root)
    name, specs = expanded.name, expanded.specs
    if tuned:
        from peft3d.tuning.tune import tuned_specs

        specs, name = tuned_specs(name, root), f"{name}.tuned"
    explicit = versus
    versus = versus or expanded.compare_to
    if layout == "default" and fmt == "md" and not (reference or explicit or dataset):
        if tuned:
            _write_tuned(name, root, versus)
        else:
            write_table(expanded, root, echo=True, versus=versus)
        return
    df = runs_frame(specs, root)
    opts: dict = {"reference": reference}
    if layout in ("default", "peft", "main", "modality"):
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


def _write_tuned(name: str, root: Path, versus: str | None) -> None:
    from peft3d.tuning.tune import write_tuned_tables

    md_path, md, _ = write_tuned_tables(name.removesuffix(".tuned"), root, versus)
    typer.echo(md)
    typer.echo(f"wrote {md_path}")
