"""``bench data check | info | export``: datasets in their published formats. Torch-free."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from peft3d.cli.app import app, fail

data_app = typer.Typer(no_args_is_help=True, help="Check, describe and export datasets (ScanObjectNN, ModelNet40, "
                                                  "synthetic).")
app.add_typer(data_app, name="data")

RootOpt = typer.Option(None, "--root", help="dataset folder (see: bench data info NAME)")
OutOpt = typer.Option(..., "--out", help="folder to write (the --root of a later check)")
NameArg = typer.Argument(..., help="family or family/variant, e.g. scanobjectnn/pb_t50_rs, modelnet40, synthetic")
STYLE = {"ok": ("✓", "green"), "note": ("•", "cyan"), "warning": ("!", "bold yellow"), "error": ("✗", "bold red")}
EXPORT_FORMATS = {"scanobjectnn": None, "modelnet40_dat": "fps_cache", "modelnet40_h5": "ply_hdf5_2048",
                  "modelnet40_txt": "normal_resampled"}


def _family(name: str):
    from peft3d.core.registry import RegistryError
    from peft3d.datasets import DATASETS, split_name

    family, variant = split_name(name)
    try:
        return family, variant, DATASETS.get(family)()
    except RegistryError as e:
        fail(str(e))


@data_app.command("check")
def check(name: str = NameArg,
          root: Path | None = RootOpt,
          strict: bool = typer.Option(False, "--strict", help="counts/classes that differ from the published ones "
                                                              "are errors, not warnings"),
          as_json: bool = typer.Option(False, "--json", help="print the report as one JSON object"),
          val_fraction: float = typer.Option(0.1, "--val-fraction"),
          split_seed: int = typer.Option(0, "--split-seed")) -> None:
    """Read a dataset through its real reader and validate it; exit 0 when valid, 2 otherwise."""
    from peft3d.datasets.check import check as run_check

    _family(name)
    report = run_check(name, str(root) if root else None, strict, val_fraction, split_seed)
    if as_json:
        print(json.dumps(report.to_dict(), default=str))
    else:
        _render(report)
    if not report.valid:
        first = next(f.message for f in report.findings if f.level == "error")
        typer.secho(f"error: {first}", fg="red", err=True)
        raise typer.Exit(2)


def _render(report) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False, soft_wrap=True)
    con.print(f"[bold]{report.dataset}/{report.variant}[/]  root: {report.root or '—'}"
              + (f"  format: {report.source.get('format')}" if report.source.get("format") else ""))
    for f in report.findings:
        mark, style = STYLE[f.level]
        label = {"warning": "WARNING ", "error": "ERROR "}.get(f.level, "")
        con.print(f"  [{style}]{mark} {label}[/]{f.message}", style=style if f.level in ("warning", "error") else None)
    if report.counts:
        exp = (report.expected or {}).get("counts") or {}
        t = Table(title="samples", title_justify="left")
        for col in ("split", "found", f"expected ({report.expected.get('basis', '—')})", "points/sample"):
            t.add_column(col)
        for split in ("train", "test"):
            t.add_row(split, f"{report.counts[split]:,}", f"{exp[split]:,}" if split in exp else "—",
                      str(report.points_per_sample.get(split, "—")))
        if "val" in report.counts:
            t.add_row("→ train / val", f"{report.counts['train_after_val']:,} / {report.counts['val']:,}", "", "")
        con.print(t)
    if report.per_class:
        t = Table(title="samples per class", title_justify="left")
        for col in ("#", "class", "train", "test"):
            t.add_column(col, justify="right" if col != "class" else "left")
        for i, c in enumerate(report.class_names):
            tr, te = report.per_class["train"][i], report.per_class["test"][i]
            t.add_row(str(i), c, str(tr), str(te), style="yellow" if 0 in (tr, te) else None)
        con.print(t)
    n_warn = sum(f.level == "warning" for f in report.findings)
    if report.valid:
        con.print("[bold green]VALID[/]" + (f" [yellow]with {n_warn} warning(s)[/] (use --strict to fail on them)"
                                             if n_warn else ""))
    else:
        con.print("[bold red]INVALID[/] (exit 2). How to fix — expected layout and sources:")
        con.print(report.fix or "", markup=False)


@data_app.command("prepare")
def prepare(name: str = typer.Argument(..., help="a dataset built from raw files, e.g. sweethome3d"),
            root: Path | None = RootOpt,
            skip_broken: bool = typer.Option(False, "--skip-broken", help="leave out unreadable catalogues and "
                                                                          "meshes (counted) instead of stopping"),
            points: int = typer.Option(2048, "--points", help="surface points sampled per model")) -> None:
    """Build a dataset's cached arrays from its raw files (finding or downloading them) and summarise it."""
    from peft3d.core.errors import DataError

    family, _, fam = _family(name)
    if not hasattr(fam, "prepare"):
        fail(f"{family} is read in place and needs no preparing; check it with: bench data check {family}")
    if points < 1:
        fail(f"--points must be >= 1, got {points}")
    try:
        typer.echo(fam.prepare(str(root) if root else None, points, skip_broken,
                               log=lambda m: typer.echo(m, err=True)))
    except DataError as e:
        fail(str(e))


@data_app.command("info")
def info(name: str = NameArg) -> None:
    """Expected folder layout, published counts and download sources."""
    from peft3d.datasets import DATASETS

    family, _, fam = _family(name)
    meta = DATASETS.meta(family)
    typer.echo(fam.info())
    typer.echo(f"\nvariants: {', '.join(meta['variants'])} (default {meta['default_variant']}); "
               f"classes: {meta.get('classes')}")
    for v, c in (meta.get("counts") or {}).items():
        typer.echo(f"  {v}: {c['train']:,} train / {c['test']:,} test")
    if meta.get("needs_root", True):
        typer.echo(f"\ncheck a copy:  bench data check {family} --root PATH")


@data_app.command("export")
def export(name: str = typer.Argument(..., help="synthetic or synthetic/VARIANT"),
           fmt: str = typer.Option("scanobjectnn", "--format",
                                   help="scanobjectnn | modelnet40_dat | modelnet40_h5 | modelnet40_txt"),
           out: Path = OutOpt,
           points: int | None = typer.Option(None, "--points", help="points per sample (default 2048; "
                                                                        "8192 for modelnet40_txt)"),
           as_variant: str = typer.Option("pb_t50_rs", "--as", help="scanobjectnn file layout to write: "
                                                                    "pb_t50_rs | obj_bg | obj_only")) -> None:
    """Write the synthetic dataset in a published layout, so the real readers can be run on it end to end."""
    family, variant, fam = _family(name)
    if family != "synthetic":
        fail(f"only the synthetic dataset can be exported (real datasets are read in place), got {family!r}")
    if fmt not in EXPORT_FORMATS:
        fail(f"unknown export format {fmt!r}; choose one of {sorted(EXPORT_FORMATS)}")
    variant = variant or fam.default_variant
    if variant not in fam.variants:
        fail(f"synthetic has no variant {variant!r}; choose one of {list(fam.variants)}")
    from peft3d.datasets import modelnet40, scanobjectnn
    from peft3d.datasets.synthetic import SHAPES

    n = points or (modelnet40.TXT_POINTS if fmt == "modelnet40_txt" else scanobjectnn.POINTS)
    train, test = fam.splits(variant, n)
    source = f"synthetic/{variant}"
    if fmt == "scanobjectnn":
        if as_variant not in scanobjectnn.LAYOUT:
            fail(f"--as must be one of {list(scanobjectnn.LAYOUT)}, got {as_variant!r}")
        scanobjectnn.export(out, train, test, list(SHAPES), source, as_variant)
        target = f"scanobjectnn/{as_variant}"
    else:
        modelnet40.export(out, train, test, list(SHAPES), source, EXPORT_FORMATS[fmt])
        target = f"modelnet40/{EXPORT_FORMATS[fmt]}"
    typer.echo(f"wrote {source} ({len(train)} train / {len(test)} test, {n} points) in {fmt} layout to {out}\n"
               f"check it:  bench data check {target} --root {out}")
