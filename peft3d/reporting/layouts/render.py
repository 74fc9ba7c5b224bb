"""Rendering a :class:`Layout` as markdown, CSV (its numeric frame) or LaTeX."""
from __future__ import annotations

from typing import Any

import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.reporting.layouts.common import Layout

FORMATS = ("md", "csv", "latex")


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"±": r"$\pm$", "Δ": r"$\Delta$", "−": "$-$", "—": "--", "–": "--", "…": r"\ldots{}",
                  "†": r"$^\dagger$", "‡": r"$^\ddagger$", "×": r"$\times$", "≥": r"$\geq$", "χ²": r"$\chi^2$",
                  "α": r"$\alpha$"}


def latex_escape(text: Any) -> str:
    s = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    for k, v in _LATEX_UNICODE.items():
        s = s.replace(k, v)
    return s


def latex(frame: pd.DataFrame, title: str, label: str, notes: list[str]) -> str:
    f = frame.fillna("").map(latex_escape)
    f.columns = [latex_escape(c) for c in f.columns]
    body = f.to_latex(index=False, escape=False, caption=latex_escape(title), label=f"tab:{label}",
                      column_format="l" * len(f.columns))
    return body + "".join(f"% {n}\n" for n in notes)


def render(layout: Layout, fmt: str) -> str:
    if fmt == "csv":
        return csv_text(layout.numeric)
    if fmt == "latex":
        return latex(layout.display, layout.title, layout.name, layout.notes)
    if fmt == "md":
        return "\n".join([f"## {layout.title}", "", fm.markdown(layout.display.fillna("")), "",
                          *[f"{n}\n" for n in layout.notes]])
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
