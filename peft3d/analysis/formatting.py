"""The one set of display formatters for numbers, signs, p-values, table cells and statistical sentences.

Every table (markdown, LaTeX, HTML) goes through these, so the same number reads the same everywhere. A
missing value (None or NaN) is an em dash, never a number.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from peft3d.analysis.stats import Friedman

MISSING = "—"
EDGE_MARK = " §"  # a tuned lr in the outer tenth of its searched range (reporting.tables.lr_at_edge)
EDGE_NOTE = ("§: the chosen lr lies in the outer tenth (log scale) of the searched range, so the optimum may lie "
             "outside it.")


def is_missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x: Any, fmt: str = ".1f") -> str:
    """``x`` formatted with ``fmt``, or a dash when missing."""
    return MISSING if is_missing(x) else format(x, fmt)


def signed(x: Any) -> str:
    """A difference in points with its sign and a true minus sign: ``+1.2``, ``−0.4``."""
    return MISSING if is_missing(x) else f"{x:+.1f}".replace("-", "−")


def p_value(x: float) -> str:
    return MISSING if is_missing(x) else f"{x:.3f}" if x >= 0.001 else "<0.001"


def p_relation(x: float) -> str:
    """``p`` as it reads after the letter: ``= 0.042`` or ``< 0.001``."""
    return "< 0.001" if x < 0.001 else f"= {p_value(x)}"


def short(text: Any, n: int = 60) -> str:
    """``text`` on one line, cut to ``n`` characters with an ellipsis."""
    r = " ".join(str(text).split())
    return r if len(r) <= n else r[: n - 1] + "…"


def params(x: float) -> str:
    """A parameter count: ``0.95M``, ``12.3k``, ``0``."""
    if is_missing(x):
        return MISSING
    if x == 0:
        return "0"
    return f"{x / 1e6:.2f}M" if x >= 1e5 else f"{x / 1e3:.1f}k"


def share(part: Any, whole: Any) -> str:
    """``part`` as a percentage of ``whole`` at two significant digits: ``2.8%``, ``0.053%``, ``100%``, ``0%``;
    a dash when either is missing or ``whole`` is 0."""
    if is_missing(part) or is_missing(whole) or not whole:
        return MISSING
    pct = 100 * part / whole
    if pct == 0:
        return "0%"
    return f"{pct:.0f}%" if pct >= 10 else f"{pct:.1f}%" if pct >= 1 else f"{pct:.2g}%"


def sci(x: Any) -> str:
    """A learning rate or weight decay at two significant digits: ``3.2e-03``; a dash when missing."""
    return MISSING if is_missing(x) else f"{x:.1e}"


def cell(row: pd.Series | None, reason_chars: int = 60) -> str:
    """One summary cell: 'mean ± std' with n when fewer runs than expected (or one); an explicit blank with
    the reason when no run succeeded."""
    if row is None:
        return MISSING
    if row["n"] == 0:
        return f"{MISSING} ({short(row['reason'], reason_chars)})"
    s = f"{row['mean']:.1f}" + (f" ± {row['std']:.1f}" if row["n"] > 1 else "")
    s += f" (n={row['n']}/{row['n_expected']})" if row["n"] < row["n_expected"] or row["n"] == 1 else ""
    # ‡: some seed selected an epoch in the last 10% of its epochs (protocol.md "Convergence")
    return s + (" ‡" if row.get("n_late", 0) else "")


def friedman_sentence(f: Friedman) -> str:
    """The Friedman test and Nemenyi critical difference in one sentence (or why it was not computed)."""
    if f.note:
        return f"Not computed: {f.note}."
    ranks = ", ".join(f"{m} {r:.2f}" for m, r in f.avg_ranks.items())
    return (f"{f.k} methods over {f.n_cells} complete cells (backbone × weights × dataset): "
            f"χ² = {f.statistic:.2f}, p {p_relation(f.pvalue)}. Average ranks (1 = best): {ranks}. "
            f"Nemenyi critical difference at α = {f.alpha}: {f.cd:.2f} (from scipy.stats.studentized_range; "
            "scipy has no Nemenyi test).")


def markdown(frame: pd.DataFrame) -> str:
    """Markdown of display strings as they are (tabulate would re-parse "10.0" as the number 10)."""
    return frame.to_markdown(index=False, disable_numparse=True)
