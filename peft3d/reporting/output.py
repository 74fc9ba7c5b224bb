"""Writing a grid's tables: the one function every command that writes a table calls (``bench run``,
``bench table``, ``bench tune``), so a table's file names, formats and notes are the same whichever wrote it.

The grid's own table — the default layout in markdown, comparing with the grid's ``compare_to`` — is
``results/tables/<name>.md`` with the flat runs frame beside it as ``<name>.csv``. Every other rendering (a paper
layout, CSV or LaTeX, the paper's reference rows, one dataset, another comparison method) is
``<name>.<layout>[.paper].<md|csv|tex>``, so it never overwrites the grid's own table.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peft3d.core.result import atomic_write_text
from peft3d.core.spec import RunSpec
from peft3d.reporting.layouts import datasets_of, render_layout
from peft3d.reporting.tables import runs_frame

EXTENSIONS = {"md": "md", "csv": "csv", "latex": "tex"}


@dataclass(frozen=True)
class Tables:
    text: str  # the rendered table, as written to paths[0]
    paths: list[Path]  # the files written, the rendered table first
    not_succeeded: int  # expected runs without a successful result (failed or missing)


def write_tables(name: str, specs: list[RunSpec], root: Path, layout: str = "default", fmt: str = "md", *,
                 versus: str | None = None, reference: str | None = None, dataset: str | None = None,
                 method: str | None = None, footer: str | None = None, variant: bool = False) -> Tables:
    """Render the results of ``specs`` (``layout`` × ``fmt``) and write them under ``root/tables``.

    ``footer``: a line stated under the table (markdown; a comment in LaTeX; CSV stays data only).
    ``variant``: not the grid's own table even in the default layout (e.g. another comparison method)."""
    df = runs_frame(specs, root)
    if layout == "default" and dataset:  # the paper layouts select their dataset themselves
        df = df[df["dataset"].isin(datasets_of(df, dataset))]
    text = render_layout(name, df, layout, fmt, versus=versus, reference=reference, dataset=dataset,
                         method=method) + _footer(footer, fmt)
    tdir = root / "tables"
    if layout == "default" and fmt == "md" and not (variant or reference or dataset):
        paths = [tdir / f"{name}.md", tdir / f"{name}.csv"]
        atomic_write_text(paths[1], df.to_csv(index=False))
    else:
        paths = [tdir / f"{name}.{layout}{'.paper' if reference else ''}.{EXTENSIONS[fmt]}"]
    atomic_write_text(paths[0], text)
    return Tables(text, paths, int((df["status"] != "success").sum()))


def _footer(line: str | None, fmt: str) -> str:
    if not line or fmt == "csv":
        return ""
    return f"\n{line}\n" if fmt == "md" else f"% {line}\n"
