"""The ``bench`` command line. Light at import: torch is imported only by commands that train or build.

User errors (:class:`peft3d.core.errors.Peft3dError`) print one line and exit 2.
"""
from __future__ import annotations

import json
import sys

import typer

from peft3d.core.errors import Peft3dError
from peft3d.core.registry import RegistryError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="peft3d: which pretrained modality transfers best to 3D point clouds, under which PEFT method.")


def fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(code)


def _ls_rows(what: str) -> list[dict]:
    from peft3d.cli import listing

    return listing.rows(what)


@app.command("ls")
def ls(what: str = typer.Argument(..., help="backbones | methods | datasets | grids | presets"),
       as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List registered names (never imports torch)."""
    try:
        rows = _ls_rows(what)
    except ValueError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    from peft3d.cli.listing import JSON_ONLY

    table = Table(title=what)
    cols = [c for c in (rows[0] if rows else ["name"]) if c not in JSON_ONLY]
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*[str(r[c]) for c in cols])
    Console().print(table)
    if any(c in JSON_ONLY for c in (rows[0] if rows else [])):
        Console().print("(--json adds where each backbone's weights were looked for)")


def _mount() -> None:
    """Sub-commands that live in their own modules (kept import-light)."""
    from peft3d.cli import (  # noqa: F401
        commands,  # noqa: F401  (registers run/table/validate/...)
        data,
        params,
        perf,
        report,
        tune,
    )


def main() -> None:
    _mount()
    try:
        app()
    except (Peft3dError, RegistryError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted: finished runs are kept; run the same command again to do only what is missing",
                    fg="yellow", err=True)
        sys.exit(130)

