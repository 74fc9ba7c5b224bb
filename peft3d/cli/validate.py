"""``bench validate``: check a grid (names, settings, data roots) without running it."""
from __future__ import annotations

from typing import Optional

import typer

from peft3d.cli.app import GridOpt, app, check_roots, parse_roots, parse_seeds


@app.command("validate")
def validate(grid: str = GridOpt, data_root: Optional[list[str]] = typer.Option(None, "--data-root"),
             seeds: Optional[str] = typer.Option(None, "--seeds")) -> None:
    """Check a grid (names, settings, data roots) without running it. Never imports torch."""
    from peft3d.grids.loader import expand

    specs = expand(grid, parse_seeds(seeds), parse_roots(data_root))
    check_roots(specs)
    cells = {(s.backbone, s.weights, s.dataset, s.variant, s.method, s.preset) for s in specs}
    typer.echo(f"grid {grid}: OK — {len(specs)} runs ({len(cells)} cells × seeds)")
