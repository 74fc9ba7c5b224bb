"""The one way a report figure becomes a PNG: matplotlib's Agg canvas (no pyplot state), and a legibility check
every figure passes through on its way out.

The report's figures are images, so a browser cannot tell whether their labels collide; this module can. After
``canvas.draw()`` it takes every text matplotlib actually drew (tick labels inside the view, axis labels, titles,
legend entries, annotations) and compares their rendered boxes (``Text.get_window_extent``) pairwise. A figure
whose texts overlap still goes into the report, with a visible note naming the colliding labels, and the tests
build every figure from adversarial data and require none.
"""
from __future__ import annotations

import base64
import html
import io
from itertools import combinations
from typing import Any

TOLERANCE_PX = 1.0  # boxes that merely touch (anti-aliasing, rounding) are not a collision


def figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _in_view(ax: Any, axis: Any, loc: float) -> bool:
    """Whether a tick at ``loc`` lies inside its axes (matplotlib draws only those)."""
    import numpy as np

    if axis is ax.xaxis:
        pos, lo, hi = ax.get_xaxis_transform().transform((loc, 0))[0], ax.bbox.x0, ax.bbox.x1
    else:
        pos, lo, hi = ax.get_yaxis_transform().transform((0, loc))[1], ax.bbox.y0, ax.bbox.y1
    return bool(np.isfinite(pos) and lo - TOLERANCE_PX <= pos <= hi + TOLERANCE_PX)


def _tick_labels(ax: Any) -> tuple[list[Any], set[int]]:
    """(the tick labels matplotlib drew, the ids of every tick label of ``ax``): ticks outside the view and the
    stale ticks of the axis's pool keep Text objects that are never drawn."""
    drawn, every = [], set()
    for axis in (ax.xaxis, ax.yaxis):
        pool = [*axis.majorTicks, *axis.minorTicks]
        every |= {id(t) for tick in pool for t in (tick.label1, tick.label2)}
        if not (ax.axison and axis.get_visible()):
            continue
        for ticks, locs in ((axis.get_major_ticks(), axis.get_majorticklocs()),
                            (axis.get_minor_ticks(), axis.get_minorticklocs())):
            for tick, loc in zip(ticks, locs, strict=False):
                if _in_view(ax, axis, loc):
                    drawn += [t for t in (tick.label1, tick.label2) if t.get_visible()]
    return drawn, every


def drawn_texts(fig: Any) -> list[Any]:
    """Every non-empty text the figure draws (the canvas must have been drawn)."""
    from matplotlib.text import Text

    drawn, ticks = [], set()
    for ax in fig.axes:
        labels, every = _tick_labels(ax)
        drawn += labels
        ticks |= every
        if not ax.axison:  # an axes drawn without its axis: its axis labels are not drawn either
            ticks |= {id(ax.xaxis.label), id(ax.yaxis.label), id(ax.xaxis.offsetText), id(ax.yaxis.offsetText)}
    others = [t for t in fig.findobj(Text) if id(t) not in ticks and t.get_visible() and t.get_figure() is fig]
    return [t for t in drawn + others if t.get_text().strip()]


def collisions(fig: Any) -> list[tuple[str, str]]:
    """Pairs of drawn texts whose rendered boxes overlap by more than :data:`TOLERANCE_PX` (draws the canvas)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in drawn_texts(fig)]
    boxes = [(s, b.padded(-TOLERANCE_PX / 2)) for s, b in boxes if b.width > 0 and b.height > 0]
    return [(a, b) for (a, ba), (b, bb) in combinations(boxes, 2) if ba.overlaps(bb)]


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def img(fig: Any, alt: str) -> str:
    """The figure as an inline ``<img>``; when its labels collide, a visible note says which (never silent)."""
    clash = collisions(fig)
    tag = f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png(fig)).decode()}">'
    if not clash:
        return tag
    shown = "; ".join(f"{a!r} / {b!r}" for a, b in clash[:5]) + (f" and {len(clash) - 5} more" if len(clash) > 5
                                                                    else "")
    return tag + f"<p class=bad>Overlapping labels in this figure: {html.escape(shown)}.</p>"
