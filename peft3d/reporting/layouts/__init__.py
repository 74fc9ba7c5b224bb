"""Paper layouts of a grid's results, rendered as markdown, CSV or LaTeX (``bench table --layout L --format F``).
A registry (:data:`LAYOUTS`) with one module per layout in this folder.

- ``default``: the method table with per-cell statistics, paired tests and Friedman (:mod:`peft3d.reporting.tables`).
- ``main``: the paper's main table: rows backbone / modality, columns datasets, with trainable parameters.
- ``peft``: methods × backbones on one dataset, with Δ to Any2Point (or ``versus``).
- ``modality``: language vs 2D vision vs audio, averaged over the backbones of each modality, with CIs.
- ``runs``: one row per run, flat.

Each layout is built from the runs frame only (result JSONs), as a display frame (strings: md, LaTeX) and a
numeric frame (CSV). ``reference="paper"`` adds the Any2Point paper's published figures
(:mod:`peft3d.analysis.reference`) as rows labelled with their source.
"""
from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.reporting.layouts.common import PAPER_DATASETS, Layout, datasets_of, selection_note
from peft3d.reporting.layouts.main import main_layout, main_paper_rows
from peft3d.reporting.layouts.modality import modality_layout
from peft3d.reporting.layouts.peft import peft_layout
from peft3d.reporting.layouts.render import FORMATS, csv_text, latex, latex_escape, render
from peft3d.reporting.layouts.runs import runs_layout
from peft3d.reporting.tables import render_markdown, summarize

__all__ = ["FORMATS", "LAYOUTS", "REFERENCES", "Layout", "build", "datasets_of", "latex_escape", "main_layout",
           "modality_layout", "peft_layout", "render", "render_default", "render_layout", "runs_layout"]

REFERENCES = ("paper",)


def _main(df, dataset=None, method=None, versus=None, reference=None) -> Layout:
    return main_layout(df, dataset, method, reference, versus)


def _peft(df, dataset=None, method=None, versus=None, reference=None) -> Layout:
    return peft_layout(df, dataset, versus, reference)


def _modality(df, dataset=None, method=None, versus=None, reference=None) -> Layout:
    return modality_layout(df, dataset, method, reference, versus)


def _runs(df, dataset=None, method=None, versus=None, reference=None) -> Layout:
    return runs_layout(df, dataset)


# The registry: layout name -> builder (``default`` is the method table of peft3d.reporting.tables). A new
# layout is a module in this folder plus one entry here.
LAYOUTS: dict[str, Callable[..., Layout] | None] = {"default": None, "main": _main, "peft": _peft,
                                                    "modality": _modality, "runs": _runs}


def build(name: str, df: pd.DataFrame, *, dataset: str | None = None, method: str | None = None,
          versus: str | None = None, reference: str | None = None) -> Layout:
    if LAYOUTS.get(name) is None:
        raise ValueError(f"unknown layout {name!r}; choose one of {', '.join(n for n in LAYOUTS if LAYOUTS[n])}")
    return LAYOUTS[name](df, dataset=dataset, method=method, versus=versus, reference=reference)


def render_default(grid: str, df: pd.DataFrame, fmt: str, versus: str | None = None,
                   reference: str | None = None) -> str:
    """The default layout: the method table with statistics (md), per-cell statistics (csv) or the method
    table (LaTeX). ``reference`` appends the paper's main-table rows."""
    from peft3d.reporting.tables import method_table

    if fmt == "md":
        text = render_markdown(grid, df, versus)
        if reference == "paper":
            rows, _ = main_paper_rows(PAPER_DATASETS, include_prior=True)
            paper = pd.DataFrame(rows).drop(columns=["_bb", *PAPER_DATASETS], errors="ignore")
            text += "\n## Paper reference (Any2Point, arXiv 2404.07989)\n\n" + fm.markdown(paper) + "\n\n" + \
                selection_note() + "\n"
        return text
    if fmt == "csv":
        return csv_text(summarize(df))
    if fmt == "latex":
        return latex(method_table(summarize(df)), f"{grid}: test accuracy (%)", "method", [])
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def render_layout(grid: str, df: pd.DataFrame, layout: str = "default", fmt: str = "md", **opts: Any) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if opts.get("reference") not in (None, *REFERENCES):
        raise ValueError(f"unknown reference {opts['reference']!r}; choose one of {', '.join(REFERENCES)}")
    if layout == "default":
        return render_default(grid, df, fmt, opts.get("versus"), opts.get("reference"))
    return render(build(layout, df, **opts), fmt)
