"""``bench validate``: check a grid (names, settings, data roots) without running it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from peft3d.cli.app import GridOpt, IncludeOpt, app, check_roots, open_grid


@app.command("validate")
def validate(grid: str = GridOpt, data_root: Optional[list[str]] = typer.Option(None, "--data-root"),
             seeds: Optional[str] = typer.Option(None, "--seeds"),
             include: Optional[list[Path]] = IncludeOpt) -> None:
    """Check a grid (names, settings, data roots) without running it. Never imports torch, except through
    peft for grids that name peft tuners."""
    specs = open_grid(grid, include, seeds, data_root).specs
    check_roots(specs)
    cells = {(s.backbone, s.weights, s.dataset, s.variant, s.method, s.preset,
              tuple(sorted(s.pipeline_options().items()))) for s in specs}
    typer.echo(f"grid {grid}: OK — {len(specs)} runs ({len(cells)} cells × seeds)")
